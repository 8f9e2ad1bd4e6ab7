package main

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRealPBXDoorsNoFalseFailure runs the bench's real-PBX section, quick, on the kit of
// `make itest` (INVOKEARI_TEST_PBX_CTL and INVOKEARI_TEST_ARI_URL, as `pbx start` prints
// them): through both doors, at 20 calls/s and at saturation, every accepted call ends in
// the stream with its true outcome and no reply is a false failure (issue 11).
func TestRealPBXDoorsNoFalseFailure(t *testing.T) {
	ctl, ariURL := os.Getenv("INVOKEARI_TEST_PBX_CTL"), os.Getenv("INVOKEARI_TEST_ARI_URL")
	if ctl == "" || ariURL == "" {
		t.Skip("REAL-PBX TEST NOT RUN: INVOKEARI_TEST_PBX_CTL/INVOKEARI_TEST_ARI_URL unset (start the kit: ../shared/asterisk/pbx start)")
	}
	u, err := url.Parse(ariURL)
	if err != nil {
		t.Fatal(err)
	}
	base, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("port of %s: %v", ariURL, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var out, logs bytes.Buffer
	b := &bench{out: &out, plan: quickPlan, only: map[string]bool{}}
	if err := b.kitSection(ctx, strings.Fields(ctl), base, t.TempDir(), &logs); err != nil {
		t.Fatalf("kit section: %v\n%s", err, tail(logs.String(), 4000))
	}
	found := 0
	_, tasksetErr := exec.LookPath("taskset")
	wantOwnCores := runtime.GOOS == "linux" && tasksetErr == nil && runtime.NumCPU() >= 2
	for _, r := range b.rows {
		switch r.ID {
		case "K0a", "K0b": // the floors under K1: every probe answered
			found++
			m := answered.FindStringSubmatch(r.Measured)
			if m == nil || m[1] != m[2] || m[1] == "0" {
				t.Errorf("%s %s: %s", r.ID, r.What, r.Measured)
			}
		case "K7a", "K7b": // own cores: measured wherever taskset can pin
			found++
			if !strings.HasPrefix(r.Measured, "0.") && !strings.HasPrefix(r.Measured, "1.") {
				t.Errorf("%s %s: %s", r.ID, r.What, r.Measured)
			}
		case "K7":
			if wantOwnCores && !strings.Contains(r.Measured, "taskset") {
				t.Errorf("own cores not run although taskset and %d CPUs are here: %s", runtime.NumCPU(), r.Measured)
			}
			if strings.Contains(r.Measured, "taskset") {
				t.Logf("OWN-CORES PART NOT RUN: %s", r.Measured)
				wantOwnCores = false
			}
		case "K3", "K4a":
			found++
			if r.Verdict != verdictPass {
				t.Errorf("%s %s: %s", r.ID, r.What, r.Measured)
			}
		case "K6a", "K6b", "K6c": // Asterisk's and our CPU per call, read from /proc
			found++
			if runtime.GOOS == "linux" && strings.HasPrefix(r.Measured, "unknown") {
				t.Errorf("%s %s: %s", r.ID, r.What, r.Measured)
			}
		}
	}
	if want := map[bool]int{true: 9, false: 7}[wantOwnCores]; found != want {
		t.Fatalf("rows K0a-b, K3, K4a, K6a-c (and K7a-b) not reported (%d of %d):\n%s", found, want, out.String())
	}
	// The direct baseline is a Stasis app that continued its calls like the daemon does.
	notes := strings.Join(b.notes, "\n")
	if !strings.Contains(notes, "calls continued") || strings.Contains(notes, "s`, 0 calls continued") {
		t.Errorf("the direct baseline's Stasis app did not continue its calls:\n%s", notes)
	}
	t.Log("\n" + out.String())
}

var answered = regexp.MustCompile(`\((\d+) of (\d+) answered\)`)

func TestMaskCPUs(t *testing.T) {
	for _, tt := range []struct {
		mask string
		want []int
	}{
		{"3", []int{0, 1}},
		{"1", []int{0}},
		{"a", []int{1, 3}},
		{"f0", []int{4, 5, 6, 7}},
		{"1,00000001", []int{0, 32}},
		{"xyz", nil},
	} {
		if got := maskCPUs(tt.mask); !slices.Equal(got, tt.want) {
			t.Errorf("maskCPUs(%q) = %v, want %v", tt.mask, got, tt.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{0.9, 0.7, 1.1}, 0.9}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestPidCPU reads this process's CPU time from /proc and compares it with getrusage.
func TestPidCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/<pid>/stat is Linux's")
	}
	if _, ok := pidCPU(0); ok {
		t.Error("pidCPU(0) reported a figure")
	}
	deadline := time.Now().Add(5 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ { // burn at least 50 ms of CPU, bounded
		if c, _ := processCPU(); c > 50*time.Millisecond {
			break
		}
		_ = strconv.Itoa(n)
	}
	before, _ := processCPU()
	got, ok := pidCPU(os.Getpid())
	after, _ := processCPU()
	if !ok {
		t.Fatal("pidCPU(own pid) failed")
	}
	// /proc counts in 10 ms ticks; getrusage is finer.
	if got < before-20*time.Millisecond || got > after+20*time.Millisecond {
		t.Errorf("pidCPU = %v, getrusage %v..%v", got, before, after)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
