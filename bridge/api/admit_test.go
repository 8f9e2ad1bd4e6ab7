package api

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for the rate limiters.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func gateWithClock(t *testing.T, cfg Config) (*Gate, *fakeClock) {
	g := newTestGate(t, cfg)
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	g.now = clk.Now
	return g, clk
}

func TestAdmitRate(t *testing.T) {
	cfg := testConfig()
	cfg.Keys[1].MaxConcurrent = 0
	g, clk := gateWithClock(t, cfg)
	p := principal(t, g, helpdeskKey) // 5/s, burst 5
	for i := range 5 {
		release, e := g.Admit(p, "pbx1")
		if e != nil {
			t.Fatalf("admit %d: %v", i, e)
		}
		release()
	}
	_, e := g.Admit(p, "pbx1")
	if e == nil || e.Status != 429 || e.Code != CodeRateLimited || e.RetryAfter <= 0 {
		t.Fatalf("6th admit = %+v, want 429 %s with RetryAfter", e, CodeRateLimited)
	}
	if got := e.RetryAfterSeconds(); got != 1 {
		t.Errorf("RetryAfterSeconds = %d, want 1", got)
	}
	// Refusals consume nothing: one token back after 200ms.
	clk.Add(200 * time.Millisecond)
	release, e := g.Admit(p, "pbx1")
	if e != nil {
		t.Fatalf("after refill: %v", e)
	}
	release()
	if _, e := g.Admit(p, "pbx1"); e == nil {
		t.Fatal("second admit after one token refilled succeeded")
	}
	// Another key is not affected.
	if release, e := g.Admit(principal(t, g, openKey), "pbx1"); e != nil {
		t.Fatalf("open key: %v", e)
	} else {
		release()
	}
}

func TestAdmitConcurrency(t *testing.T) {
	g, _ := gateWithClock(t, testConfig())
	p := principal(t, g, helpdeskKey) // max_concurrent 2
	r1, e1 := g.Admit(p, "pbx1")
	r2, e2 := g.Admit(p, "pbx1")
	if e1 != nil || e2 != nil {
		t.Fatalf("admits: %v %v", e1, e2)
	}
	_, e := g.Admit(p, "pbx1")
	if e == nil || e.Status != 429 || e.Code != CodeTooManyConcurrent || e.RetryAfter <= 0 {
		t.Fatalf("3rd admit = %+v, want 429 %s", e, CodeTooManyConcurrent)
	}
	r1()
	r1() // idempotent: must not free a second slot
	r3, e := g.Admit(p, "pbx1")
	if e != nil {
		t.Fatalf("after release: %v", e)
	}
	if _, e := g.Admit(p, "pbx1"); e == nil || e.Code != CodeTooManyConcurrent {
		t.Fatalf("double release freed two slots: %v", e)
	}
	r2()
	r3()
	if got := g.InFlight(); got != 0 {
		t.Errorf("InFlight = %d, want 0", got)
	}
}

func TestAdmitGlobalCap(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 3
	g, _ := gateWithClock(t, cfg)
	p := principal(t, g, openKey)
	var releases []func()
	for range 3 {
		r, e := g.Admit(p, "pbx1")
		if e != nil {
			t.Fatal(e)
		}
		releases = append(releases, r)
	}
	if _, e := g.Admit(principal(t, g, funcsKey), "pbx1"); e == nil || e.Code != CodeTooManyInFlight || e.Status != 429 {
		t.Fatalf("4th admit = %v, want %s", e, CodeTooManyInFlight)
	}
	for _, r := range releases {
		r()
	}
	if r, e := g.Admit(p, "pbx1"); e != nil {
		t.Fatalf("after releases: %v", e)
	} else {
		r()
	}
}

func TestAdmitServerCPSRefundsKeyToken(t *testing.T) {
	cfg := testConfig()
	cfg.Keys[0].Rate = "2/s"
	g, clk := gateWithClock(t, cfg)
	p := principal(t, g, openKey)
	r, e := g.Admit(p, "pbx2") // pbx2: 1 cps
	if e != nil {
		t.Fatal(e)
	}
	r()
	_, e = g.Admit(p, "pbx2")
	if e == nil || e.Code != CodeServerCPS || e.RetryAfter <= 0 {
		t.Fatalf("2nd admit on pbx2 = %+v, want %s", e, CodeServerCPS)
	}
	// The key's second token was given back, so pbx1 still admits.
	if r, e := g.Admit(p, "pbx1"); e != nil {
		t.Fatalf("key token was not refunded: %v", e)
	} else {
		r()
	}
	clk.Add(time.Second)
	if r, e := g.Admit(p, "pbx2"); e != nil {
		t.Fatalf("pbx2 after 1s: %v", e)
	} else {
		r()
	}
	if _, e := g.Admit(p, "nope"); e == nil || e.Code != CodeUnknownServer {
		t.Fatalf("unknown server = %v", e)
	}
}

func TestAdmitConcurrentCallers(t *testing.T) {
	g, _ := gateWithClock(t, testConfig())
	p := principal(t, g, helpdeskKey) // max_concurrent 2, 5/s
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		admitted []func()
	)
	for range 50 {
		wg.Go(func() {
			if r, e := g.Admit(p, "pbx1"); e == nil {
				mu.Lock()
				admitted = append(admitted, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(admitted) != 2 {
		t.Fatalf("admitted %d concurrent calls, want exactly 2", len(admitted))
	}
	for _, r := range admitted {
		r()
	}
	if got := g.InFlight(); got != 0 {
		t.Errorf("InFlight = %d, want 0", got)
	}
}
