package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
)

// readmeBlock returns the command lines of the first ```sh block under heading in
// README.md (comments and blank lines dropped, `\` continuations joined).
func readmeBlock(t *testing.T, heading string) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no heading %q", heading)
	}
	if next := strings.Index(rest, "\n## "); next >= 0 {
		rest = rest[:next]
	}
	_, block, ok := strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatalf("README.md: no sh block under %q", heading)
	}
	block, _, _ = strings.Cut(block, "```")
	var lines []string
	cont := ""
	for _, l := range strings.Split(block, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cont += s
			continue
		}
		lines = append(lines, cont+l)
		cont = ""
	}
	return lines
}

// TestReadmeCallControl runs the README's call-control commands, exactly as written,
// against a daemon in demo mode (its key `demo`, its phones): curl is pointed at the
// daemon's port with --connect-to, the CLI with INVOKEARI_URL.
func TestReadmeCallControl(t *testing.T) {
	lines := readmeBlock(t, "## Call control")
	if len(lines) < 7 {
		t.Fatalf("README call-control block has %d commands: %q", len(lines), lines)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "invokeari"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	e := &testEnv{t: t, logs: &syncBuffer{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	started := make(chan string, 1)
	go func() {
		e.done <- runDaemon(ctx, serveOptions{listen: "127.0.0.1:0", natsListen: "127.0.0.1:-1",
			storeDir: t.TempDir(), simListen: "127.0.0.1:0", out: e.logs, getenv: func(string) string { return "" },
			started: func(addr string, d *daemon) { e.d = d; started <- addr }})
	}()
	select {
	case addr := <-started:
		e.base = "http://" + addr
	case err := <-e.done:
		t.Fatalf("demo daemon stopped: %v\n%s", err, e.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("demo daemon did not start\n%s", e.logs.String())
	}
	t.Cleanup(e.stop)
	e.waitReady(true)

	hostPort := strings.TrimPrefix(e.base, "http://")
	prelude := `curl() { command curl --connect-to 127.0.0.1:8080:` + hostPort + ` "$@"; }` + "\n"
	for _, line := range lines {
		cmd := exec.Command("sh", "-c", prelude+line)
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
			"INVOKEARI_URL="+e.base, "INVOKEARI_API_KEY=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		var env struct {
			Status string        `json:"status"`
			Call   *events.Call  `json:"call"`
			Calls  []events.Call `json:"calls"`
		}
		if err := json.Unmarshal(out, &env); err != nil || env.Status != "success" {
			t.Fatalf("%s: not a success envelope (%v):\n%s", line, err, out)
		}
		if env.Call == nil && len(env.Calls) == 0 {
			t.Errorf("%s: neither a call nor a list of calls:\n%s", line, out)
		}
		for _, c := range env.Calls {
			if c.ID != "ring-1" {
				t.Errorf("%s: lists call %s, the demo only placed ring-1", line, c.ID)
			}
		}
	}
	r := e.ctl(http.MethodGet, "/v2/calls/ring-1", demoKey)
	if c := r.Env.Call; c == nil || c.Outcome != events.Canceled || c.HangupBy != events.HangupByAPI ||
		!strings.Contains(c.Reason, "changed my mind") {
		t.Errorf("ring-1 after the README's commands: %s", r.Raw)
	}
}
