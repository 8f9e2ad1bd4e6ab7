// Package itest is the real-PBX suite (`make itest`): the invokeari binary runs as a
// child process against the kit's Asterisk 22 (../shared/asterisk), and every check goes
// through both doors (HTTP and NATS request/reply) and the JetStream stream. Without the
// kit's env (INVOKEARI_TEST_ARI_URL, ...) it says so loudly and every test skips.
package itest

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The kit's env, printed by `pbx start` and exported by `make itest`.
var (
	ariURL  = os.Getenv("INVOKEARI_TEST_ARI_URL")
	ariUser = os.Getenv("INVOKEARI_TEST_ARI_USER")
	ariPass = os.Getenv("INVOKEARI_TEST_ARI_PASS")
	pbxCtl  = strings.Fields(os.Getenv("INVOKEARI_TEST_PBX_CTL"))
)

// daemonBin is the invokeari binary TestMain builds once.
var daemonBin string

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if ariURL == "" {
		banner := strings.Repeat("#", 78)
		fmt.Fprintf(os.Stderr, "%s\n# itest: NO REAL PBX: INVOKEARI_TEST_ARI_URL is not set, EVERY REAL-PBX TEST IS SKIPPED.\n"+
			"# Run `make itest` (it starts ../shared/asterisk/pbx and exports its env).\n%s\n", banner, banner)
		return m.Run()
	}
	if ariUser == "" || ariPass == "" || len(pbxCtl) == 0 {
		fmt.Fprintln(os.Stderr, "itest: INVOKEARI_TEST_ARI_URL is set but _USER, _PASS or _PBX_CTL is not")
		return 2
	}
	dir, err := os.MkdirTemp("", "invokeari-itest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "itest:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	daemonBin = filepath.Join(dir, "invokeari")
	start := time.Now()
	build := exec.Command("go", "build", "-o", daemonBin, "github.com/invokeari/invokeari/cmd/invokeari")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "itest: build invokeari:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "itest: built %s in %v; real PBX at %s\n", daemonBin, time.Since(start).Round(time.Millisecond), ariURL)
	code := m.Run()
	if failed := results.print(os.Stdout); failed > 0 && code == 0 {
		code = 1
	}
	fmt.Fprintf(os.Stdout, "itest: wall time %v\n", time.Since(start).Round(time.Second))
	return code
}

// needPBX skips t when the kit's env is absent (TestMain has said so loudly).
func needPBX(t *testing.T) {
	t.Helper()
	if ariURL == "" {
		t.Skip("no real PBX: run `make itest`")
	}
}

// table is the suite's result table: one row per checked case and door.
type table struct {
	mu   sync.Mutex
	rows []row
}

type row struct {
	name, door, want, got string
	pass                  bool
}

var results table

// check records one row and fails t when got differs from want.
func check(t *testing.T, name, door, want, got string) bool {
	t.Helper()
	return checkOK(t, name, door, want, got, want == got)
}

// checkOK records one row whose pass/fail the caller decided.
func checkOK(t *testing.T, name, door, want, got string, pass bool) bool {
	t.Helper()
	results.mu.Lock()
	results.rows = append(results.rows, row{name, door, want, got, pass})
	results.mu.Unlock()
	if !pass {
		t.Errorf("%s [%s]: want %s, got %s", name, door, want, got)
	}
	return pass
}

// print writes the table and the closing `itest: N passed, N failed` line; it returns
// the number failed.
func (tb *table) print(w io.Writer) int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	passed, failed := 0, 0
	fmt.Fprintf(w, "\n%-44s %-6s %-58s %-58s %s\n", "case", "door", "expected", "got", "pass")
	for _, r := range tb.rows {
		mark := "PASS"
		if r.pass {
			passed++
		} else {
			failed++
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%-44s %-6s %-58s %-58s %s\n", r.name, r.door, r.want, r.got, mark)
	}
	fmt.Fprintf(w, "itest: %d passed, %d failed\n", passed, failed)
	return failed
}
