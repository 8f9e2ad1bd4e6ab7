package sim

import (
	"flag"
	"os"
	"runtime"
	"strconv"
	"testing"
)

// replayParallel is how many conformance replays run at once unless -parallel is given.
// The replays mostly wait (paced in scaled recorded time), so they need far fewer cores
// than they are; the default (GOMAXPROCS, 2 on a small CI box) would serialise the 160
// recordings past the suite's time budget. More than ~3 per 2 cores under -race delays
// timers beyond the conformance test's allowances.
const replayParallel = 3

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit && runtime.GOMAXPROCS(0) < replayParallel {
		_ = flag.Set("test.parallel", strconv.Itoa(replayParallel))
	}
	os.Exit(m.Run())
}
