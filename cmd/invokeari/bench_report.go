package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// verdict is a row's result against its target.
type verdict int

const (
	verdictInfo verdict = iota // no target: reported for context
	verdictPass
	verdictFail
)

func (v verdict) String() string {
	switch v {
	case verdictPass:
		return "pass"
	case verdictFail:
		return "**FAIL**"
	default:
		return "—"
	}
}

// check is the verdict of a measured value against a bound: at most max when atMost,
// at least min otherwise.
func check(measured, bound float64, atMost bool) verdict {
	if (atMost && measured <= bound) || (!atMost && measured >= bound) {
		return verdictPass
	}
	return verdictFail
}

// benchRow is one line of the published table.
type benchRow struct {
	ID       string // "1", "2a", ...
	What     string
	Target   string
	Measured string
	Verdict  verdict
}

// percentile returns the p-th percentile (0 < p ≤ 100, nearest rank) of ds; 0 for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.999999) - 1
	rank = max(0, min(rank, len(s)-1))
	return s[rank]
}

// fmtDur prints a latency with a unit suited to its size.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// writeTable renders rows as a Markdown table.
func writeTable(w io.Writer, rows []benchRow) {
	fmt.Fprintln(w, "| # | measure | target | measured | result |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.ID, cell(r.What), cell(r.Target), cell(r.Measured), r.Verdict)
	}
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// machineInfo describes where the numbers were measured.
type machineInfo struct {
	Date      time.Time
	GoVersion string
	OS, Arch  string
	CPUs      int
	CPUModel  string
	LoadStart string // /proc/loadavg when the run began ("" where unknown)
	LoadEnd   string
	// KitLoadStart and KitLoadEnd bracket the real-PBX section ("" when it did not run).
	KitLoadStart, KitLoadEnd string
}

func currentMachine(now time.Time) machineInfo {
	return machineInfo{Date: now, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		CPUs: runtime.NumCPU(), CPUModel: cpuModel(), LoadStart: loadAvg()}
}

// loadAvg is the 1/5/15-minute load average where the OS tells it (Linux); other
// processes on a shared machine show up here and in every wall-clock figure.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// cpuModel reads the CPU model name where the OS tells it (Linux); "" elsewhere.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// writeReport writes the whole BENCHMARKS.md document.
func writeReport(w io.Writer, m machineInfo, rows []benchRow, notes []string, took time.Duration) {
	fmt.Fprintln(w, "# invokeari benchmarks")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Produced by `make bench` (`go run ./cmd/invokeari bench -out BENCHMARKS.md`); every figure below comes from")
	fmt.Fprintln(w, "one run on one machine, loopback only. Targets are ratios or per-core figures because these machines are noisy.")
	fmt.Fprintln(w)
	cpu := m.CPUModel
	if cpu == "" {
		cpu = "unknown CPU"
	}
	fmt.Fprintf(w, "- date: %s\n- machine: %d logical CPUs (%s), %s/%s\n- Go: %s\n- run took: %s\n",
		m.Date.UTC().Format(time.RFC3339), m.CPUs, cpu, m.OS, m.Arch, m.GoVersion, took.Round(time.Second))
	if m.LoadStart != "" {
		fmt.Fprintf(w, "- load average (1/5/15 min) at start: %s, at end: %s (above the CPU count, other work competed with the run)\n",
			m.LoadStart, m.LoadEnd)
	}
	fmt.Fprintln(w)
	rows = slices.Clone(rows)
	slices.SortStableFunc(rows, func(a, b benchRow) int { return strings.Compare(a.ID, b.ID) })
	var kit []benchRow
	rows = slices.DeleteFunc(rows, func(r benchRow) bool {
		if strings.HasPrefix(r.ID, "K") {
			kit = append(kit, r)
			return true
		}
		return false
	})
	if len(rows) > 0 {
		fmt.Fprintln(w, "## Simulator")
		fmt.Fprintln(w)
		writeTable(w, rows)
	}
	if len(kit) > 0 {
		if len(rows) > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, "## Real PBX (Asterisk 22.10.1 kit)")
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Load average (1/5/15 min) at the section's start: %s, at its end: %s.\n\n", m.KitLoadStart, m.KitLoadEnd)
		writeTable(w, kit)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "## What each row measures")
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "## Where the time goes")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Rows 1c, 1d and 3c split the two largest gaps inside the same run. For more, `go run ./cmd/invokeari bench -profiles DIR`")
	fmt.Fprintln(w, "writes a CPU profile per phase (`cpu-<phase>.pprof`) and the daemon's heap at each memory step; `-only pipeline` (or")
	fmt.Fprintln(w, "`overhead,throughput,outcome,memory`) runs a subset. Wall-clock rows (1, 2, 3b, 3d, 5) move with the load average above;")
	fmt.Fprintln(w, "3a is per CPU-second of this process, so other load does not lower it. The real-PBX section (`-only kit`) starts the")
	fmt.Fprintln(w, "kit `../shared/asterisk/pbx` on `-kit-base` (default 18088) when it is present and is skipped, loudly, when it is not;")
	fmt.Fprintln(w, "its rows are differences or ratios against direct ARI measured in the same interleaved run. With `-profiles` it writes")
	fmt.Fprintln(w, "`cpu-kit-latency.pprof` and one `cpu-kit-saturation-<path>-<round>.pprof` per throughput slice (`go tool pprof` merges")
	fmt.Fprintln(w, "several). Rows K6 put the daemon's CPU per call next to Asterisk's: on a machine the two share, K2 is about their sum.")
	fmt.Fprintln(w, "Rows K0 are the floor under K1: the one request/reply hop a door adds to direct ARI, timed with nothing behind it, so")
	fmt.Fprintln(w, "K1 = K0 + the daemon's own work. Rows K7 repeat K2 and K5d with Asterisk and this process pinned to separate CPUs")
	fmt.Fprintln(w, "(`taskset`, restored after), the way to run the daemon next to a PBX it must not slow down; profiles `cpu-kit-own-cores-*`.")
}
