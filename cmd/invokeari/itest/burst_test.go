package itest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/invokeari/invokeari/events"
)

// burstPerDoor is how many originates each door gets; burstInFlight bounds the
// requests outstanding at once (the load runs as fast as the daemon and Asterisk take it:
// the rate it reaches is the kit's saturation rate).
const (
	burstPerDoor  = 1000
	burstProbe    = 200
	burstInFlight = 64
)

func burstCalls(prefix, door string, n int) []*placed {
	calls := make([]*placed, n)
	for i := range calls {
		calls[i] = &placed{call: call{ID: fmt.Sprintf("%s-%04d", prefix, i), D: "Local/answerfast@sim",
			C: "sink", E: "s", Wait: "accepted", Door: door}}
	}
	return calls
}

// fire sends calls with at most inFlight outstanding, one every pace (0: as fast as
// replies free a slot), and returns how long it took until the last reply.
func fire(d *daemon, calls []*placed, inFlight int, pace time.Duration) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	start := time.Now()
	for i, p := range calls {
		if pace > 0 {
			time.Sleep(time.Until(start.Add(time.Duration(i) * pace))) // the pace of the load, not a wait for a condition
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() { // one request; ends with its reply or ctx
			defer wg.Done()
			defer func() { <-sem }()
			p.r = d.originate(ctx, p.call)
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// observer is a second ARI application subscribed to all of Asterisk's events: it sees
// every channel Asterisk creates, whatever the daemon reports.
type observer struct {
	mu      sync.Mutex
	created map[string]bool
}

func startObserver(t *testing.T) *observer {
	t.Helper()
	u, err := url.Parse(ariURL)
	if err != nil {
		t.Fatal(err)
	}
	ws := fmt.Sprintf("ws://%s%s/events?app=itest-observer&subscribeAll=true", u.Host, u.Path)
	h := http.Header{}
	req, _ := http.NewRequest(http.MethodGet, ariURL, nil)
	req.SetBasicAuth(ariUser, ariPass)
	h.Set("Authorization", req.Header.Get("Authorization"))
	conn, _, err := websocket.DefaultDialer.Dial(ws, h)
	if err != nil {
		t.Fatalf("observer websocket: %v", err)
	}
	o := &observer{created: map[string]bool{}}
	done := make(chan struct{})
	go func() { // the reader; ends when the connection closes (cleanup)
		defer close(done)
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var ev struct {
				Type    string `json:"type"`
				Channel struct {
					ID string `json:"id"`
				} `json:"channel"`
			}
			if json.Unmarshal(msg, &ev) == nil && ev.Type == "ChannelCreated" {
				o.mu.Lock()
				o.created[ev.Channel.ID] = true
				o.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return o
}

func (o *observer) saw(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.created[id]
}

// TestBurst sends burstPerDoor originates of Local/answerfast@sim (wait=accepted)
// through each door as fast as they are taken, and checks: no accepted call without its
// one `ended` (0 lost outcomes), no call reported failed whose channel Asterisk in fact
// created (seen by the observer), every channel Asterisk created answered and completed.
func TestBurst(t *testing.T) {
	d := startDaemon(t, "itest-burst")
	obs := startObserver(t)
	st := d.openStream()
	for _, door := range []string{"http", "nats"} {
		// Probe: burstProbe originates with burstInFlight outstanding find the rate the
		// daemon and Asterisk sustain; then the burst runs paced at that rate.
		probe := burstCalls("probe-"+door, door, burstProbe)
		elapsed := fire(d, probe, burstInFlight, 0)
		rate := float64(burstProbe) / elapsed.Seconds()
		calls := burstCalls("burst-"+door, door, burstPerDoor)
		elapsed = fire(d, calls, 4*burstInFlight, time.Duration(float64(time.Second)/rate))
		burstRate := float64(burstPerDoor) / elapsed.Seconds()
		t.Logf("burst %s: probe %d at %.0f/s; burst %d paced at that rate in %v (%.0f/s)", door, burstProbe, rate,
			burstPerDoor, elapsed.Round(time.Millisecond), burstRate)
		calls = append(calls, probe...)

		var ids []string
		accepted := 0
		for _, p := range calls {
			ids = append(ids, p.call.ID)
			if p.r.Err == nil && p.r.Status == 200 && p.r.Env.Status == "success" {
				accepted++
			}
		}
		st.readUntil(t, ids, 2*time.Second, 2*time.Minute)
		lost, replyFalse, endedFalse, badStream := 0, 0, 0, 0
		outcomes := map[string]int{}
		notPlaced := map[string]int{} // failures Asterisk confirms: it created no channel
		var evidence []string
		for _, p := range calls {
			ok := p.r.Err == nil && p.r.Status == 200 && p.r.Env.Status == "success"
			ev := st.ended(p.call.ID)
			switch {
			case ev == nil && ok:
				lost++
				evidence = append(evidence, p.call.ID+": accepted, no ended")
			case ev != nil:
				outcomes[string(ev.Outcome)]++
				if st.integrity(p.call.ID) != sound {
					badStream++
					evidence = append(evidence, p.call.ID+": "+st.integrity(p.call.ID))
				}
			}
			if !obs.saw(p.call.ID) {
				if !ok || (ev != nil && ev.Outcome != events.Completed) {
					k := failureKind(p, ev)
					if notPlaced[k] == 0 && ev != nil {
						t.Logf("burst %s: not placed, e.g. %s: %s", door, p.call.ID, ev.Reason)
					}
					notPlaced[k]++
				}
				continue
			}
			if !ok {
				replyFalse++
				what := fmt.Sprintf("reply %d %s ari=%d", p.r.Status, p.r.Env.Status, p.r.Env.Response.HTTPCode)
				if p.r.Env.Error != nil {
					what += " " + p.r.Env.Error.Code
				}
				if p.r.Err != nil {
					what += " " + p.r.Err.Error()
				}
				evidence = append(evidence, p.call.ID+": Asterisk created the channel; "+what)
			}
			if ev != nil && ev.Outcome != events.Completed {
				endedFalse++
				evidence = append(evidence, p.call.ID+": Asterisk created the channel; ended "+string(ev.Outcome)+": "+ev.Reason)
			}
		}
		if len(evidence) > 0 {
			if len(evidence) > 20 {
				evidence = append(evidence[:20], fmt.Sprintf("... %d more", len(evidence)-20))
			}
			t.Logf("burst %s evidence:\n%s", door, strings.Join(evidence, "\n"))
		}
		name := fmt.Sprintf("burst %d+%d Local/answerfast", burstProbe, burstPerDoor)
		load, _ := os.ReadFile("/proc/loadavg")
		checkOK(t, name+": rate", door, "measured", fmt.Sprintf("probe %.0f/s burst %.0f/s, %d accepted, load %s", rate, burstRate, accepted,
			strings.Join(strings.Fields(string(load))[:1], "")), true)
		check(t, name+": lost outcomes", door, "0", fmt.Sprint(lost))
		check(t, name+": placed, reply says failed", door, "0", fmt.Sprint(replyFalse))
		check(t, name+": placed, ended says failed", door, "0", fmt.Sprint(endedFalse))
		check(t, name+": stream integrity", door, "0 bad", fmt.Sprintf("%d bad", badStream))
		placedN := 0
		for _, p := range calls {
			if obs.saw(p.call.ID) {
				placedN++
			}
		}
		check(t, name+": placed calls completed", door, fmt.Sprint(placedN), fmt.Sprint(outcomes[string(events.Completed)]))
		checkOK(t, name+": not placed (true failures)", door, "reported", fmt.Sprint(notPlaced), true)
	}
}

// failureKind names a refused call's failure briefly: the reply's error code or ARI
// status, and the ended event's reason up to its first colon.
func failureKind(p *placed, ev *events.Event) string {
	k := fmt.Sprintf("reply %d ari=%d", p.r.Status, p.r.Env.Response.HTTPCode)
	if p.r.Env.Error != nil {
		k += " " + p.r.Env.Error.Code
	}
	if ev != nil {
		r, _, _ := strings.Cut(ev.Reason, ":")
		k += " / " + string(ev.Outcome) + " " + r
	}
	return k
}
