package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invokeari/invokeari/stasisapp/ari"
)

var benchSmoke = flag.Bool("bench.smoke", false, "also run `invokeari bench -quick` end to end (builds the binary; ~30 s)")

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"median of odd", ms(5, 1, 3), 50, 3 * time.Millisecond},
		{"p50 of ten", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 50, 5 * time.Millisecond},
		{"p90 of ten", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 90, 9 * time.Millisecond},
		{"p99 of ten is the max", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 99, 10 * time.Millisecond},
		{"p100", ms(2, 8, 4), 100, 8 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tt.in...)
			if got := percentile(tt.in, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.in, tt.p, got, tt.want)
			}
			for i := range in {
				if in[i] != tt.in[i] {
					t.Fatalf("percentile reordered its input")
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		measured, bound float64
		atMost          bool
		want            verdict
	}{
		{2.0, 2.2, true, verdictPass},
		{2.2, 2.2, true, verdictPass},
		{2.3, 2.2, true, verdictFail},
		{0.6, 0.5, false, verdictPass},
		{0.5, 0.5, false, verdictPass},
		{0.4, 0.5, false, verdictFail},
	}
	for _, tt := range tests {
		if got := check(tt.measured, tt.bound, tt.atMost); got != tt.want {
			t.Errorf("check(%v, %v, atMost=%v) = %v, want %v", tt.measured, tt.bound, tt.atMost, got, tt.want)
		}
	}
}

func TestPipeID(t *testing.T) {
	tests := []struct {
		prefix string
		i, n   int
		want   string
	}{
		{"t", 42, 14, "t0000000000042"},
		{"w", 0, 12, "w00000000000"},
		{"l", 1234567, 8, "l1234567"},
	}
	for _, tt := range tests {
		if got := pipeID(tt.prefix, tt.i, tt.n); got != tt.want || len(got) != tt.n {
			t.Errorf("pipeID(%q, %d, %d) = %q, want %q", tt.prefix, tt.i, tt.n, got, tt.want)
		}
	}
}

// TestPipeScenarios checks the pipeline's input: every app-originate recording yields
// its channel id, and a frame rewritten for another call decodes with that call's id.
func TestPipeScenarios(t *testing.T) {
	scs, err := loadPipeScenarios("../../testdata/ari/recordings")
	if err != nil {
		t.Fatal(err)
	}
	if len(scs) < 10 {
		t.Fatalf("got %d scenarios, want at least 10 (s2_stasis_*.nosuball.jsonl)", len(scs))
	}
	for _, sc := range scs {
		id := pipeID("x", 7, len(sc.chanID))
		var mentioned int
		for _, fr := range sc.frames {
			buf := bytes.Clone(fr.data)
			for _, off := range fr.offs {
				copy(buf[off:], id)
			}
			ev, err := ari.DecodeEvent(buf)
			if err != nil {
				t.Fatalf("%s: decode rewritten frame: %v", sc.name, err)
			}
			if bytes.Contains(buf, []byte(sc.chanID)) {
				t.Fatalf("%s: frame still carries the recorded id %s", sc.name, sc.chanID)
			}
			if ce, ok := ev.(ari.ChannelEvent); ok && ce.ChannelID() == id {
				mentioned++
			}
		}
		if mentioned == 0 {
			t.Errorf("%s: no frame is about the rewritten channel %s", sc.name, id)
		}
	}
}

func TestRunLoad(t *testing.T) {
	var calls atomic.Int64
	boom := errors.New("boom")
	r := runLoad(context.Background(), 4, 100, 0, func(_ context.Context, seq int64) error {
		calls.Add(1)
		if seq%10 == 0 {
			return boom
		}
		return nil
	})
	if got, want := calls.Load(), int64(100); got != want {
		t.Errorf("calls = %d, want %d", got, want)
	}
	if r.ok != 90 || r.errs != 10 || len(r.lat) != 90 || !errors.Is(r.firstErr, boom) {
		t.Errorf("got ok=%d errs=%d lat=%d firstErr=%v, want 90, 10, 90, boom", r.ok, r.errs, len(r.lat), r.firstErr)
	}
	// A duration-bounded run stops by itself.
	r = runLoad(context.Background(), 2, 0, 20*time.Millisecond, func(ctx context.Context, _ int64) error { return nil })
	if r.ok == 0 || r.elapsed > 5*time.Second {
		t.Errorf("duration run: ok=%d elapsed=%s", r.ok, r.elapsed)
	}
}

func TestWriteReport(t *testing.T) {
	var b bytes.Buffer
	rows := []benchRow{
		{ID: "1a", What: "overhead", Target: "≤ 2.2×", Measured: "1.9×", Verdict: verdictPass},
		{ID: "2a", What: "a|b", Target: "≥ 0.5", Measured: "0.3", Verdict: verdictFail},
	}
	writeReport(&b, machineInfo{Date: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), GoVersion: "go1.26", CPUs: 8, OS: "linux", Arch: "amd64"},
		rows, []string{"note one"}, 90*time.Second)
	got := b.String()
	for _, want := range []string{"2026-01-02T03:04:05Z", "8 logical CPUs", "go1.26", "| 1a | overhead | ≤ 2.2× | 1.9× | pass |",
		`| 2a | a\|b | ≥ 0.5 | 0.3 | **FAIL** |`, "- note one"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
}

// TestBenchPipelineSmall runs the event-pipeline measurement on a few calls: every
// event handed to the publisher must be acked and in the stream, every call ended.
func TestBenchPipelineSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := benchPipeline(ctx, t.TempDir(), "../../testdata/ari/recordings", 300, 100*time.Millisecond, 20_000)
	if err != nil {
		t.Fatal(err)
	}
	if r.dropped != 0 || r.decodeErrs != 0 || r.notEnded != 0 {
		t.Errorf("dropped=%d decodeErrs=%d notEnded=%d, want all 0", r.dropped, r.decodeErrs, r.notEnded)
	}
	if r.streamMsgs != r.wanted || r.wanted == 0 {
		t.Errorf("stream holds %d events, %d were handed over", r.streamMsgs, r.wanted)
	}
	if r.frames == 0 || r.publishCalls == 0 || len(r.lat) == 0 || len(r.latLight) == 0 || r.decodeOnly == 0 {
		t.Errorf("nothing measured: frames=%d events=%d latencies=%d+%d decode-only=%.0f/s",
			r.frames, r.publishCalls, len(r.lat), len(r.latLight), r.decodeOnly)
	}
}

// TestBenchSmoke runs the whole bench in quick mode against a freshly built binary
// (the simulator runs in that binary's process). Opt-in: -args -bench.smoke.
func TestBenchSmoke(t *testing.T) {
	if !*benchSmoke {
		t.Skip("opt-in: go test ./cmd/invokeari -run TestBenchSmoke -args -bench.smoke")
	}
	exe := filepath.Join(t.TempDir(), "invokeari")
	if out, err := exec.Command("go", "build", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err = runBench(ctx, []string{"-quick", "-sim-exe", exe, "-out", report,
		"-recordings", filepath.Join(wd, "../../testdata/ari/recordings")}, &out)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	doc, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"| 1a |", "| 1b |", "| 1c |", "| 1d |", "| 2a |", "| 2b |", "| 3a |", "| 3b |", "| 3c |", "| 3d |", "| 4a |", "| 4b |", "| 5 |"} {
		if !bytes.Contains(doc, []byte(id)) {
			t.Errorf("report lacks row %s:\n%s", id, doc)
		}
	}
}
