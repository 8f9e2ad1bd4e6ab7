package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Own cores (rows K7): K2 and K5d again with Asterisk on one half of the CPUs and this
// process (bench client, daemon, embedded NATS) on the other, as an operator would run
// the daemon next to a PBX it must not slow down. It is not the setup of K2's target
// (shared cores); it shows how much of K2's gap is CPU the two share.

// kitOwnCores is the own-cores part's result.
type kitOwnCores struct {
	skipped string // why it did not run ("" when it ran)
	split   string // which CPUs each side had
	sat     kitSat
	win     kitWindow
}

// ownCores pins, measures and restores both processes' CPU affinity (taskset -a: every
// thread, and threads made later inherit it).
func (k *kitRun) ownCores(ctx context.Context) (own kitOwnCores, err error) {
	taskset, lookErr := exec.LookPath("taskset")
	self := os.Getpid()
	var cpus []int
	var selfMask, astMask string
	switch {
	case k.plan.ownRounds == 0:
		own.skipped = "not in this plan"
	case lookErr != nil:
		own.skipped = "no taskset on this machine"
	case k.astPID <= 0:
		own.skipped = "Asterisk's pid is unknown"
	default:
		if selfMask, err = affinityMask(ctx, taskset, self); err == nil {
			astMask, err = affinityMask(ctx, taskset, k.astPID)
		}
		if err != nil {
			own.skipped = err.Error()
			break
		}
		if cpus = maskCPUs(selfMask); len(cpus) < 2 {
			own.skipped = fmt.Sprintf("this process may use %d CPU (mask %s); own cores need 2", len(cpus), selfMask)
		}
	}
	if own.skipped != "" {
		k.b.progress("K7: own cores skipped: %s", own.skipped)
		return own, nil
	}
	half := len(cpus) / 2
	astCPUs, selfCPUs := cpuList(cpus[:half]), cpuList(cpus[half:])
	own.split = fmt.Sprintf("Asterisk on CPU %s, this process on CPU %s", astCPUs, selfCPUs)
	k.b.progress("K7: own cores (%s): saturation, %d rounds, then frame → ended stored", own.split, k.plan.ownRounds)
	defer func() {
		// Put both back as they were, whatever happened.
		rerr := setAffinity(context.WithoutCancel(ctx), taskset, k.astPID, astMask, false)
		if serr := setAffinity(context.WithoutCancel(ctx), taskset, self, selfMask, false); rerr == nil {
			rerr = serr
		}
		if rerr != nil && err == nil {
			err = fmt.Errorf("restore CPU affinity: %w", rerr)
		}
	}()
	// A machine that refuses the pinning (a container without CAP_SYS_NICE for another
	// user's process, say) skips the part, saying why, as it does without taskset.
	if perr := setAffinity(ctx, taskset, k.astPID, astCPUs, true); perr != nil {
		own.skipped = perr.Error()
		return own, nil
	}
	if perr := setAffinity(ctx, taskset, self, selfCPUs, true); perr != nil {
		own.skipped = perr.Error()
		return own, nil
	}
	own.sat, err = k.saturation(ctx, k.plan.ownRounds, "kit-own-cores")
	if err != nil {
		return own, err
	}
	own.win, err = k.frameToStored(ctx)
	return own, err
}

// affinityMask is pid's CPU affinity mask as taskset prints it (hex, e.g. "3").
func affinityMask(ctx context.Context, taskset string, pid int) (string, error) {
	out, err := exec.CommandContext(ctx, taskset, "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return "", fmt.Errorf("taskset -p %d: %w", pid, err)
	}
	_, mask, ok := strings.Cut(strings.TrimSpace(string(out)), "mask: ")
	if !ok || mask == "" {
		return "", fmt.Errorf("taskset -p %d: unexpected output %q", pid, out)
	}
	return mask, nil
}

// setAffinity sets every thread of pid to the CPU list (list true, "0,1") or hex mask.
func setAffinity(ctx context.Context, taskset string, pid int, cpus string, list bool) error {
	args := []string{"-a", "-p"}
	if list {
		args = append(args, "-c")
	}
	args = append(args, cpus, strconv.Itoa(pid))
	if out, err := exec.CommandContext(ctx, taskset, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("taskset %s: %w: %.200s", strings.Join(args, " "), err, out)
	}
	return nil
}

// maskCPUs lists the CPUs set in a hex mask such as "3" or "ff,ffffffff".
func maskCPUs(mask string) []int {
	hex := strings.ReplaceAll(mask, ",", "")
	var cpus []int
	for i := len(hex) - 1; i >= 0; i-- {
		v, err := strconv.ParseUint(hex[i:i+1], 16, 8)
		if err != nil {
			return nil
		}
		for b := range 4 {
			if v&(1<<b) != 0 {
				cpus = append(cpus, (len(hex)-1-i)*4+b)
			}
		}
	}
	return cpus
}

func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// reportOwnCores writes the K7 rows.
func (k *kitRun) reportOwnCores(own kitOwnCores) {
	b := k.b
	if own.skipped != "" {
		b.row(benchRow{ID: "K7", What: "own cores: K2 and K5d with Asterisk and this process on separate CPUs", Target: "reported",
			Measured: "not run: " + own.skipped, Verdict: verdictInfo})
		return
	}
	for i, p := range k.paths[1:] {
		r, ratios := own.sat.ratio(i + 1)
		b.row(benchRow{ID: fmt.Sprintf("K7%c", 'a'+i), What: fmt.Sprintf("own cores (%s): saturation, %s ÷ direct ARI, median of %d rounds (K2's setup on separate CPUs)", own.split, p.name, len(ratios)),
			Target: "reported", Measured: own.sat.describe(i+1, r, ratios), Verdict: verdictInfo})
	}
	k.mu.Lock()
	stored := k.wire.frameTo(k.ended, own.win.from, own.win.to)
	k.mu.Unlock()
	b.row(benchRow{ID: "K7c", What: "own cores: K5d again (websocket frame ChannelDestroyed read → `ended` stored), p99",
		Target: "reported", Measured: fmtTail(stored), Verdict: verdictInfo})
	for i, p := range k.paths {
		c := own.sat.cpu[i]
		b.row(benchRow{ID: fmt.Sprintf("K7%c", 'd'+i), What: fmt.Sprintf("own cores: CPU per call, %s: Asterisk / this process", p.name),
			Target: "reported", Measured: c.String(), Verdict: verdictInfo})
	}
}
