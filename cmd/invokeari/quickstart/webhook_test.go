package quickstart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events/webhook"
)

// webhookSection is README's section with the "press 1 to confirm" walkthrough.
const webhookSection = "Webhook-driven calls (`e` = URL)"

// TestReadmeWebhookExample runs README's "press 1 to confirm" walkthrough as written:
// `make run` (the demo daemon, on free ports given by env as in TestReadmeCommandsAsWritten),
// each webhook saved from its README code block under the name its first line gives and
// started with README's command for it (node, python3; PORT= picks a free port), and
// README's curl line with real curl (only the host:port of the daemon and of the webhook
// rewritten). It checks the reply (completed, no webhook_error, the transcript README
// quotes), that the webhook printed exactly what README shows (answered, gathered 1, and
// the ended status callback), and that it refuses unsigned, forged and stale requests.
func TestReadmeWebhookExample(t *testing.T) {
	root := repoRoot(t)
	readme := readREADME(t, root)
	section := sectionBody(readme, webhookSection)
	if section == "" {
		t.Fatalf("README has no section %q", webhookSection)
	}
	files, printed := readmeWebhookBlocks(t, section)
	var curlCmd string
	var starts []string
	for _, c := range shellCommands(readme, webhookSection) {
		switch {
		case strings.HasPrefix(c, "curl "):
			if curlCmd != "" {
				t.Fatalf("README's webhook section has two curl commands; teach this test: %q", c)
			}
			curlCmd = c
		case strings.HasPrefix(c, "node "), strings.HasPrefix(c, "python3 "):
			starts = append(starts, c)
		default:
			t.Errorf("README command %q: this test does not know how to check it; teach it", c)
		}
	}
	if curlCmd == "" || len(starts) != 2 {
		t.Fatalf("README's webhook section lost its curl line or its node/python3 commands: curl %q, webhooks %q", curlCmd, starts)
	}
	for _, tool := range []string{"curl", "node", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required to run README's webhook example (.ci/run installs it): %v", tool, err)
		}
	}

	tmp := t.TempDir()
	env, httpAddr, _ := demoEnv(t, tmp, os.Getenv("PATH"))
	began := time.Now()
	daemon := startBg(t, root, env, "make run")
	waitReady(t, daemon, "http://"+httpAddr+"/readyz")
	t.Logf("make run ready in %v", time.Since(began).Round(time.Millisecond))
	secret := demoWebhookSecret(t, daemon.output())
	if !strings.Contains(section, "`"+secret+"`") {
		t.Errorf("README's webhook section does not give the demo webhook secret %q", secret)
	}

	for _, start := range starts {
		t.Run(strings.Fields(start)[0], func(t *testing.T) {
			name := strings.Fields(start)[1]
			code, ok := files[name]
			if !ok {
				t.Fatalf("README runs %q but has no code block whose first line names %s", start, name)
			}
			dir := filepath.Join(tmp, strings.Fields(start)[0])
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(code), 0o644); err != nil {
				t.Fatal(err)
			}
			hookAddr := freeAddr(t)
			_, port, _ := net.SplitHostPort(hookAddr)
			hook := startBg(t, dir, append(env[:len(env):len(env)], "PORT="+port), start)
			waitListening(t, hook, hookAddr)

			refuseUnsigned(t, "http://"+hookAddr+"/", []byte(secret))

			c := strings.NewReplacer("127.0.0.1:8080", httpAddr, "127.0.0.1:8090", hookAddr).Replace(curlCmd)
			began := time.Now()
			out := runOnce(t, root, env, c)
			t.Logf("curl (wait=end) answered in %v", time.Since(began).Round(time.Millisecond))
			checkWebhookReply(t, out, hookAddr)

			// The ended status callback comes through the event stream, a moment after the reply.
			waitOutput(t, hook, "ended", 30*time.Second)
			var got []string
			for _, l := range strings.Split(hook.output(), "\n") {
				if l = strings.TrimSpace(l); l != "" {
					got = append(got, l)
				}
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", printed) {
				t.Errorf("%s printed %q; README shows %q", start, got, printed)
			}
			hook.stop(t)
		})
	}
	daemon.stop(t)
}

// readmeWebhookBlocks returns the section's js and python code blocks by the file name
// their first line gives ("// confirm.js: …", "# confirm.py: …") and the lines of its
// text block (what the webhook prints).
func readmeWebhookBlocks(t *testing.T, section string) (files map[string]string, printed []string) {
	t.Helper()
	files = map[string]string{}
	fence := regexp.MustCompile("(?m)^```([a-z]*)\n((?s:.*?))^```$")
	named := regexp.MustCompile(`^(?://|#) ([\w-]+\.(?:js|py)):`)
	for _, m := range fence.FindAllStringSubmatch(section, -1) {
		switch lang, body := m[1], m[2]; lang {
		case "js", "python":
			n := named.FindStringSubmatch(body)
			if n == nil {
				t.Fatalf("README's %s block does not start with a comment naming its file:\n%s", lang, body)
			}
			files[n[1]] = body
		case "text":
			printed = strings.Split(strings.TrimSuffix(body, "\n"), "\n")
		}
	}
	if len(files) != 2 || len(printed) == 0 {
		t.Fatalf("README's webhook section should have a js block, a python block and a text block of what they print; got files %v, printed %q",
			keys(files), printed)
	}
	return files, printed
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// demoWebhookSecret reads the demo key's webhook secret from make run's DEMO MODE line.
func demoWebhookSecret(t *testing.T, log string) string {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		var l struct {
			Msg    string `json:"msg"`
			Secret string `json:"webhook_secret"`
			Allow  string `json:"webhooks_allow"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && strings.HasPrefix(l.Msg, "DEMO MODE") {
			if l.Secret == "" || l.Allow != "127.0.0.1" {
				t.Fatalf("the DEMO MODE line gives webhook_secret %q, webhooks_allow %q:\n%s", l.Secret, l.Allow, line)
			}
			return l.Secret
		}
	}
	t.Fatalf("make run logged no DEMO MODE line:\n%s", log)
	return ""
}

// waitListening waits until the webhook accepts connections on addr.
func waitListening(t *testing.T, p *bgCmd, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not listening on %s within 30s: %v\n%s", p.name, addr, err, p.output())
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", p.name, p.output())
		case <-time.After(50 * time.Millisecond): // polling pace; the deadline decides
		}
	}
}

// refuseUnsigned checks that the webhook answers 401 to a request with no signature,
// one signed with another secret and one signed with its secret 10 minutes ago.
func refuseUnsigned(t *testing.T, url string, secret []byte) {
	t.Helper()
	body := []byte(`{"event":"answered","call":{"id":"forged"}}`)
	for _, c := range []struct{ name, sig string }{
		{"unsigned", ""},
		{"forged", webhook.Sign([]byte("not-"+string(secret)), time.Now(), body)},
		{"stale", webhook.Sign(secret, time.Now().Add(-10*time.Minute), body)},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if c.sig != "" {
			req.Header.Set(webhook.SignatureHeader, c.sig)
		}
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err != nil {
			t.Errorf("%s request: %v", c.name, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s request: the webhook answered %d, want 401", c.name, resp.StatusCode)
		}
	}
}

// checkWebhookReply checks curl's reply: the call completed under the webhook's script,
// with the steps README quotes from its transcript.
func checkWebhookReply(t *testing.T, out, hookAddr string) {
	t.Helper()
	var r struct {
		Status string `json:"status"`
		Call   struct {
			Outcome      string `json:"outcome"`
			WebhookError string `json:"webhook_error"`
		} `json:"call"`
		Debug struct {
			Transcript []struct {
				Step string `json:"step"`
			} `json:"transcript"`
		} `json:"debug"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("curl's reply is not JSON: %v\n%s", err, out)
	}
	if r.Status != "success" || r.Call.Outcome != "completed" || r.Call.WebhookError != "" {
		t.Errorf("reply status %q, outcome %q, webhook_error %q; want success, completed, none:\n%s",
			r.Status, r.Call.Outcome, r.Call.WebhookError, out)
	}
	// README: webhook POST answered, action gather, ari stop playback, webhook POST
	// gathered, action play, action hangup — in that order.
	want := []string{"webhook POST answered to " + hookAddr, "action gather", "ari stop playback",
		"webhook POST gathered to " + hookAddr, "action play", "action hangup"}
	i := 0
	for _, s := range r.Debug.Transcript {
		if i < len(want) && strings.HasPrefix(s.Step, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("transcript lacks %q (in README's order):\n%s", want[i], out)
	}
}
