package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterReadmeRecipe runs the commands of README's "Running several daemons" recipe
// exactly as written, from the repository root: the demo starts, a ringing call placed on
// daemon a is adopted by daemon b after a is SIGKILLed, and ends no_answer.
func TestClusterReadmeRecipe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the daemon and runs a three-node cluster on fixed ports")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	lines := readmeRecipe(t, filepath.Join(root, "README.md"))
	if len(lines) != 5 || !strings.HasSuffix(lines[0], " &") {
		t.Fatalf("README recipe = %q, want 5 commands starting with the demo in the background", lines)
	}
	// 1. The demo, in the background (its own process group, stopped at the end).
	demo := exec.Command("bash", "-c", strings.TrimSuffix(lines[0], " &"))
	demo.Dir = root
	demo.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out syncBuffer
	demo.Stdout, demo.Stderr = &out, &out
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = demo.Wait(); close(done) }() // reaps the demo; ends when it exits
	t.Cleanup(func() {
		_ = syscall.Kill(-demo.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-demo.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			for _, f := range []string{"a.log", "b.log", "n3.log", "sim.log"} {
				b, _ := os.ReadFile(filepath.Join(root, "data/cluster-demo", f))
				t.Logf("--- %s (tail):\n%s", f, tail(string(b), 3000))
			}
		}
	})
	waitUntil(t, 3*time.Minute, "cluster demo ready", func() bool {
		select {
		case <-done:
			t.Fatalf("cluster demo exited early:\n%s", out.String())
		default:
		}
		return strings.Contains(out.String(), "cluster demo ready")
	})
	sh := func(line string, limit time.Duration) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-c", line)
		cmd.Dir = root
		cmd.WaitDelay = time.Second
		b, err := cmd.CombinedOutput()
		if err != nil && ctx.Err() == nil {
			t.Fatalf("%s: %v\n%s", line, err, b)
		}
		return string(b)
	}
	// 2. A ringing call on daemon a.
	if got := sh(lines[1], 30*time.Second); !strings.Contains(got, `"status": "success"`) || !strings.Contains(got, "event ringing") {
		t.Fatalf("call on a: %s", got)
	}
	// 3. Kill a; 4. b adopts the call.
	killed := time.Now()
	sh(lines[2], 10*time.Second)
	adopted := waitUntil(t, 30*time.Second, "b adopted the call", func() bool {
		return strings.Contains(sh(lines[3], 5*time.Second), `"adopted_total":1`)
	})
	t.Logf("recipe: SIGKILL of a (and of its NATS node) → b adopted the call: %s", adopted.Sub(killed).Round(time.Millisecond))
	// 5. The call ends no_answer, once.
	var got string
	waitUntil(t, 60*time.Second, "demo-ring ended no_answer", func() bool { // the 30 s ring, from the originate
		got = sh(lines[4], 3*time.Second) // watch follows until stopped: its output so far
		return strings.Contains(got, `"outcome":"no_answer"`)
	})
	if n := strings.Count(got, `"event":"ended"`); n != 1 {
		t.Errorf("demo-ring: %d ended events, want 1:\n%s", n, got)
	}
}

// readmeRecipe returns the commands of the first sh block after "### Local recipe".
func readmeRecipe(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "### Local recipe")
	if !ok {
		t.Fatal("README has no Local recipe")
	}
	_, rest, _ = strings.Cut(rest, "```sh\n")
	block, _, _ := strings.Cut(rest, "```")
	var lines []string
	for l := range strings.SplitSeq(strings.TrimSpace(block), "\n") {
		lines = append(lines, l)
	}
	return lines
}
