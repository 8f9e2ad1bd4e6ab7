// Package quickstart runs README.md's quick start, NATS section and webhook walkthrough
// as a newcomer types them: every shell command of those sections (and the webhooks it
// starts), taken from README's fenced code blocks, against `make run` (the demo daemon)
// in a child process.
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
	"sync"
	"syscall"
	"testing"
	"time"
)

// natsCLI is the `nats` tool README's examples use, built from source in the test setup.
const natsCLI = "github.com/nats-io/natscli/nats@v0.5.0"

// TestReadmeCommandsAsWritten runs each shell command of README's "Quick start" and
// "NATS" sections exactly as written. Only the demo's ports differ: the daemon listens on
// free ports given by env (INVOKEARI_HTTP_LISTEN, INVOKEARI_NATS_LISTEN,
// INVOKEARI_SIM_LISTEN), the clients find it by env (NATS_URL for `nats`,
// INVOKEARI_NATS_URL and INVOKEARI_URL for `invokeari`), and the one URL written into a
// command (curl's http://127.0.0.1:8080) has its host:port rewritten.
func TestReadmeCommandsAsWritten(t *testing.T) {
	root := repoRoot(t)
	readme := readREADME(t, root)
	var cmds []string
	for _, sec := range []string{"Quick start", "NATS"} {
		got := shellCommands(readme, sec)
		if len(got) == 0 {
			t.Fatalf("README section %q has no sh code block", sec)
		}
		cmds = append(cmds, got...)
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is required to run README's commands (.ci/run installs it): %v", err)
	}
	t.Logf("README commands: %q (curl: %s)", cmds, curl)

	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	buildTools(t, root, bin, goExperiment())
	env, httpAddr, natsAddr := demoEnv(t, tmp, bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	env = append(env,
		"XDG_CONFIG_HOME="+filepath.Join(tmp, "config"), // no nats CLI context of the user
		"NATS_URL=nats://"+natsAddr,
	)
	daemonEnv := env                                                             // the daemon: INVOKEARI_NATS_URL would mean an external NATS
	env = append(env[:len(env):len(env)], "INVOKEARI_NATS_URL=nats://"+natsAddr, // the clients
		"INVOKEARI_URL=http://"+httpAddr+"/v2/invokeARI")
	rewrite := func(c string) string { return strings.ReplaceAll(c, "127.0.0.1:8080", httpAddr) }

	// Long-running commands first (the daemon, then the live subscriber), then the
	// one-shot commands in README order, then the replay.
	var daemon, sub *bgCmd
	var watch string
	for _, c := range cmds {
		switch {
		case c == "make run":
			daemon = startBg(t, root, daemonEnv, c)
			waitReady(t, daemon, "http://"+httpAddr+"/readyz")
		case strings.HasPrefix(c, "nats sub "):
			sub = startBg(t, root, env, c)
		case strings.HasPrefix(c, "invokeari watch "):
			watch = c
		}
	}
	if daemon == nil || sub == nil || watch == "" {
		t.Fatalf("README lost `make run`, `nats sub` or `invokeari watch`: %q", cmds)
	}
	waitOutput(t, sub, "Subscribing on", 30*time.Second)

	ended := 0 // calls placed by the commands below
	for _, c := range cmds {
		var wants []string
		switch {
		case c == "make run", strings.HasPrefix(c, "nats sub "), strings.HasPrefix(c, "invokeari watch "):
			continue
		case c == "make test":
			t.Logf("not run: %q (this test is part of it)", c)
			continue
		case strings.HasPrefix(c, "curl "):
			wants = []string{`"status":"fail"`, `"outcome":"busy"`, `"cause":17`, `"sip_code":486`}
		case strings.HasPrefix(c, "nats req invokeari.originate "):
			wants = []string{`"status":"success"`, `"outcome":"answered"`}
		case strings.HasPrefix(c, "nats pub invokeari.originate "):
			wants = []string{"Published"}
		case strings.HasPrefix(c, "go run ./cmd/invokeari call "):
			wants = []string{"event ended", `"outcome": "completed"`}
		default:
			t.Errorf("README command %q: this test does not know how to check it; teach it", c)
			continue
		}
		ended++
		out := runOnce(t, root, env, rewrite(c))
		compact := compactJSON(out)
		for _, w := range wants {
			if !strings.Contains(out, w) && !strings.Contains(compact, w) {
				t.Errorf("%s\nlacks %q; output:\n%s", c, w, out)
			}
		}
	}

	// Every call's `ended` reaches the live subscriber and the stream's replay.
	w := startBg(t, root, env, watch)
	for _, p := range []*bgCmd{sub, w} {
		waitCount(t, p, `"event":"ended"`, ended, 60*time.Second)
	}
	got := map[string]int{}
	for _, line := range strings.Split(w.output(), "\n") {
		var ev struct{ Event, Outcome string }
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Event == "ended" {
			got[ev.Outcome]++
		}
	}
	if want := map[string]int{"busy": 2, "completed": 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("replayed outcomes %v, want %v:\n%s", got, want, w.output())
	}
	for _, p := range []*bgCmd{w, sub, daemon} {
		p.stop(t)
	}
	// `make run`'s log carries nats-server's warnings and errors only, not its banner.
	if log := daemon.output(); strings.Contains(log, "nats-server") && regexp.MustCompile(`"level":"INFO"[^\n]*"component":"nats-server"`).MatchString(log) {
		t.Errorf("make run logged nats-server notices at INFO:\n%s", log)
	}
}

// shellCommands returns the commands of the ```sh blocks in README's "## <section>"
// (with its subsections), one per command: continuation lines joined, comment and
// blank lines dropped.
func shellCommands(readme, section string) []string {
	body := sectionBody(readme, section)
	var cmds []string
	in := false
	cur := ""
	for _, line := range strings.Split(body, "\n") {
		switch {
		case !in && strings.TrimSpace(line) == "```sh":
			in = true
		case in && strings.TrimSpace(line) == "```":
			in = false
		case in:
			l := strings.TrimSpace(line)
			if cur == "" && (l == "" || strings.HasPrefix(l, "#")) {
				continue
			}
			if c, ok := strings.CutSuffix(l, `\`); ok {
				cur += c
				continue
			}
			cur += l
			if i := strings.Index(cur, "  #"); i >= 0 && !strings.ContainsAny(cur[i:], `'"`) {
				cur = strings.TrimSpace(cur[:i]) // a trailing comment, as the shell drops it
			}
			cmds = append(cmds, cur)
			cur = ""
		}
	}
	return cmds
}

// sectionBody is the text of README's "## <section>" with its subsections ("" if none).
func sectionBody(readme, section string) string {
	start := strings.Index(readme, "\n## "+section+"\n")
	if start < 0 {
		return ""
	}
	body := readme[start+len(section)+5:]
	if end := strings.Index(body, "\n## "); end >= 0 {
		body = body[:end]
	}
	return body
}

func readREADME(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// goExperiment is the Makefile's default experiment, so that `make run`, `go run` and
// the binaries built by the tests share one compilation.
func goExperiment() string {
	return "GOEXPERIMENT=" + orDefault(os.Getenv("GOEXPERIMENT"), "jsonv2")
}

// demoEnv is the environment of `make run` on free ports (INVOKEARI_HTTP_LISTEN,
// INVOKEARI_NATS_LISTEN, INVOKEARI_SIM_LISTEN) with its NATS store under tmp, and of the
// commands run beside it, with PATH path.
func demoEnv(t *testing.T, tmp, path string) (env []string, httpAddr, natsAddr string) {
	t.Helper()
	httpAddr, natsAddr = freeAddr(t), freeAddr(t)
	env = append(cleanEnv(), goExperiment(), "PATH="+path,
		"INVOKEARI_HTTP_LISTEN="+httpAddr,
		"INVOKEARI_NATS_LISTEN="+natsAddr,
		"INVOKEARI_SIM_LISTEN="+freeAddr(t),
		"INVOKEARI_NATS_STORE_DIR="+filepath.Join(tmp, "nats"),
	)
	return env, httpAddr, natsAddr
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

// buildTools puts `invokeari` and the `nats` CLI into bin.
func buildTools(t *testing.T, root, bin, exp string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"build", "-o", filepath.Join(bin, "invokeari"), "./cmd/invokeari"},
		{"install", natsCLI},
	} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOBIN="+bin, exp)
		if args[0] == "install" {
			cmd.Dir = bin // outside this module: `go install pkg@version` builds natscli's own go.mod
			cmd.Env = append(cmd.Env, "GOFLAGS=", "GOEXPERIMENT=")
		}
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("go %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// cleanEnv is this process's environment without settings that would point the
// commands elsewhere.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "INVOKEARI_") && !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "GOEXPERIMENT=") &&
			!strings.HasPrefix(kv, "XDG_CONFIG_HOME=") && !strings.HasPrefix(kv, "MAKEFLAGS=") && !strings.HasPrefix(kv, "MFLAGS=") {
			out = append(out, kv)
		}
	}
	return out
}

// runOnce runs one README command with bash, as a user's shell would.
func runOnce(t *testing.T, dir string, env []string, c string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", c)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%s: %v\n%s", c, err, out)
	}
	return string(out)
}

func compactJSON(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		var b bytes.Buffer
		if json.Compact(&b, []byte(line)) == nil {
			out = append(out, b.String())
		}
	}
	var b bytes.Buffer // a whole indented document (invokeari call's reply)
	if i := strings.Index(s, "{"); i >= 0 && json.Compact(&b, []byte(s[i:strings.LastIndex(s, "}")+1])) == nil {
		out = append(out, b.String())
	}
	return strings.Join(out, "\n")
}

// bgCmd is a long-running README command in its own process group.
type bgCmd struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	out  bytes.Buffer
}

func (p *bgCmd) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *bgCmd) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func startBg(t *testing.T, dir string, env []string, c string) *bgCmd {
	t.Helper()
	p := &bgCmd{name: c, done: make(chan struct{})}
	p.cmd = exec.Command("bash", "-c", c)
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", c, err)
	}
	go func() { // reaps the process; ends when it exits
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.signal(syscall.SIGKILL); <-p.done })
	return p
}

func (p *bgCmd) signal(sig syscall.Signal) { _ = syscall.Kill(-p.cmd.Process.Pid, sig) }

// stop interrupts the process group (Ctrl-C) and waits for it, killing it after 20s.
func (p *bgCmd) stop(t *testing.T) {
	t.Helper()
	p.signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not stop on SIGINT within 20s", p.name)
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

func waitReady(t *testing.T, p *bgCmd, url string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute) // `go run` may compile first
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", p.name, p.output())
		case <-time.After(50 * time.Millisecond): // polling pace; the deadline decides
		}
	}
	t.Fatalf("%s: %s not 200 within 3 min:\n%s", p.name, url, p.output())
}

func waitOutput(t *testing.T, p *bgCmd, want string, limit time.Duration) {
	t.Helper()
	waitCount(t, p, want, 1, limit)
}

// waitCount waits until p's output holds want n times.
func waitCount(t *testing.T, p *bgCmd, want string, n int, limit time.Duration) {
	t.Helper()
	deadline := time.After(limit)
	for strings.Count(p.output(), want) < n {
		select {
		case <-p.done:
			t.Fatalf("%s exited before printing %q %d times:\n%s", p.name, want, n, p.output())
		case <-deadline:
			t.Fatalf("%s: %q %d times not printed within %v:\n%s", p.name, want, n, limit, p.output())
		case <-time.After(50 * time.Millisecond): // polling pace; the deadline decides
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
