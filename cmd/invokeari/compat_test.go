package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHostedJavaScriptExample runs the hosted API's JavaScript client example with node
// against the daemon and checks what it prints: the unchanged client gets the envelope,
// and now also the call's outcome (busy, cause 17 for PJSIP/6002 in demo terms).
func TestHostedJavaScriptExample(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the client compatibility test (.ci/run installs it): %v", err)
	}
	e := startEnv(t, "")
	e.sim.SetEndpoint("PJSIP/6002", testEndpoints()["PJSIP/busy"])
	script, err := filepath.Abs("../../testdata/js/hosted_example.js")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(),
		"INVOKEARI_URL="+e.base+"/v2/invokeARI",
		"INVOKEARI_KEY="+testAPIKey,
		"INVOKEARI_ARI="+e.sim.URL(),
		"INVOKEARI_ARIUSER="+testARIUser,
		"INVOKEARI_ARIPASS="+testARIPass,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{"Status: fail", "HTTP code: 200", "Channel: PJSIP/6002-", "Outcome: busy", "Cause: 17"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
