package stasisapp

import (
	"strconv"
	"testing"
	"time"
)

func TestIDFilter(t *testing.T) {
	now := time.Now()
	f := newIDFilter()
	if f.mayHold("x", now) {
		t.Fatal("an empty filter holds x")
	}
	// Three blocks' worth: the first block's ids expire first.
	const n = 2*filterBlockIDs + 1000
	for i := range n {
		exp := now.Add(time.Hour)
		if i < filterBlockIDs {
			exp = now.Add(time.Minute)
		}
		f.add("held-"+strconv.Itoa(i), exp, now)
	}
	if len(f.blocks) != 3 {
		t.Fatalf("%d blocks for %d ids; want 3", len(f.blocks), n)
	}
	for i := range n {
		if !f.mayHold("held-"+strconv.Itoa(i), now) {
			t.Fatalf("held-%d not held: a Bloom filter must have no false negatives", i)
		}
	}
	fp := 0
	const probes = 100000
	for i := range probes {
		if f.mayHold("new-"+strconv.Itoa(i), now) {
			fp++
		}
	}
	// About 1 in 2000 per block, 3 blocks: well under 1%.
	if fp > probes/100 {
		t.Errorf("%d of %d new ids may be held; want under 1%%", fp, probes)
	}
	later := now.Add(2 * time.Minute)
	f.mayHold("x", later)
	if len(f.blocks) != 2 {
		t.Errorf("%d blocks after the first block's ids expired; want 2", len(f.blocks))
	}
	if !f.mayHold("held-"+strconv.Itoa(n-1), later) {
		t.Error("an unexpired id was forgotten")
	}
	if f.mayHold("x", now.Add(2*time.Hour)) || len(f.blocks) != 0 {
		t.Errorf("after every expiry: %d blocks left", len(f.blocks))
	}
}

func BenchmarkIDFilter(b *testing.B) {
	now := time.Now()
	f := newIDFilter()
	for i := range 4 * filterBlockIDs {
		f.add("held-"+strconv.Itoa(i), now.Add(time.Hour), now)
	}
	i := 0
	for b.Loop() {
		i++
		f.mayHold("new-"+strconv.Itoa(i), now)
	}
}
