package stasisapp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// TestWebhookExamples runs examples/webhook/confirm.js (node) and confirm.py (python3) as
// written and lets each drive a call to a phone that answers and presses 1 (the demo's
// PJSIP/6007): answered → gather → gathered 1 → say 1, hangup.
func TestWebhookExamples(t *testing.T) {
	for _, ex := range []struct{ interp, file string }{{"node", "confirm.js"}, {"python3", "confirm.py"}} {
		t.Run(ex.file, func(t *testing.T) {
			bin, err := exec.LookPath(ex.interp)
			if err != nil {
				t.Skipf("EXAMPLE NOT RUN: %s is not installed", ex.interp)
			}
			port := freePort(t)
			ctx, cancel := context.WithCancel(context.Background())
			cmd := exec.CommandContext(ctx, bin, filepath.Join("..", "examples", "webhook", ex.file))
			cmd.Env = append(cmd.Environ(), fmt.Sprintf("PORT=%d", port))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var lines []map[string]any
			readDone := make(chan struct{})
			go func() {
				defer close(readDone)
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					var m map[string]any
					if json.Unmarshal(sc.Bytes(), &m) == nil {
						mu.Lock()
						lines = append(lines, m)
						mu.Unlock()
					}
				}
			}()
			t.Cleanup(func() { cancel(); <-readDone; _ = cmd.Wait() })
			hook := fmt.Sprintf("http://127.0.0.1:%d/", port)
			waitFor(t, ex.file+" listening", func() bool {
				c, err := net.DialTimeout("tcp", hook[len("http://"):len(hook)-1], 100*time.Millisecond)
				if err == nil {
					c.Close()
				}
				return err == nil
			})

			s := sim.New(sim.Config{Username: "u", Password: "p", Endpoints: map[string]sim.Behavior{
				"PJSIP/6007": {Result: sim.Answer, RingAfter: 50 * time.Millisecond, AnswerAfter: time.Second,
					HangupAfter: 20 * time.Second, DTMF: "1", DTMFAfter: time.Second}}})
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			e := startAppOn(t, s.URL(), "u", "p")
			r := webhookReq(callID("example"), "PJSIP/6007", hook)
			last, _, tr := runWebhookCall(t, e, r)
			if last.Outcome != events.Completed || last.Call.WebhookError != "" {
				t.Errorf("ended %s (%s), webhook_error %q", last.Outcome, last.Reason, last.Call.WebhookError)
			}
			if !strings.Contains(tr, "action say") || !strings.Contains(tr, "action hangup") {
				t.Errorf("the example did not confirm:\n%s", tr)
			}
			mu.Lock()
			defer mu.Unlock()
			got := fmt.Sprint(lines)
			if len(lines) != 2 || lines[0]["event"] != "answered" || lines[1]["event"] != "gathered" || lines[1]["digits"] != "1" {
				t.Errorf("the example printed %s, want answered then gathered 1", got)
			}
		})
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
