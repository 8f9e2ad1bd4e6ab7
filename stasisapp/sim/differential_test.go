package sim

// The differential test holds the simulator to the real PBX kit in one run: for every
// recorded scenario the conformance test covers, it records the scenario afresh from the
// kit (recorder_test.go: the recording used as a script, the same REST requests,
// websocket connects/closes/drops and reactions) and replays that fresh recording
// against the simulator with the conformance test's replay and rules (replaySim: the
// same normalisation of ids, names, timestamps, entity ids, the same allowances A1-A9,
// REST-only comparison of subscribeAll scenarios). A difference fails the scenario's
// subtest and names the field: connection, channel, event index, field / JSON path, and
// the sim and real values (or method, path and JSON path for a REST reply).
//
// To run many scenarios at once on one PBX, each scenario uses its own app name
// (diffNNN instead of invokeari; mapped back in the fresh recording), so a websocket
// without subscribeAll sees only its scenario's channels, and a subscribeAll websocket's
// events are filtered down to the scenario's own channels (recorder.keep). Scenarios
// whose replies list the whole PBX (GET /channels, /applications, /endpoints) or that
// use fixed client-chosen channel ids (s4_ids_*: the twins would collide) are recorded
// alone, one after another, after the others; the two that run `core restart now` last
// (the kit restarts in place, INVOKEARI_TEST_PBX_CTL). The simulator replays run once the
// kit is done. subscribeAll websockets are closed in batches when no call is left
// (liveOpts.held: closing them under load wedged Asterisk's ARI).
//
// It needs the kit (INVOKEARI_TEST_ARI_URL etc., set by `make itest`); without it it
// skips with a loud message.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// diffExcluded are the recordings the differential test leaves out, and why.
var diffExcluded = map[string]string{
	"s4_ids_dialplan.jsonl": "its GET /channels is scripted 1002.7 ms after the originate of a call the far end " +
		"answers after Wait(1): on the kit it lands before or after the answer by a millisecond or two, so the " +
		"reply (Ringing/Wait or Up/SayDigits) is a race there, and the 409s after it depend on it",
	"s4_ids_dialplan.nosuball.jsonl": "as s4_ids_dialplan.jsonl",
	"s6_ws_asterisk_stop_start.jsonl": "stops Asterisk (`core stop now`) and starts it again with the " +
		"recorder's control script: the kit is started once for the whole `make itest` run, and stopping it " +
		"under the other tests' feet is not this test's to do (the restart scenarios, which the kit survives " +
		"in place, do run: last, alone)",
}

// diffConcurrency bounds the app-only scenarios recorded from the kit at once, diffBatch
// the subscribeAll ones (see liveHTTP and liveOpts.held).
const (
	diffConcurrency = 30
	diffBatch       = 10
)

var diffOut = flag.String("differential-out", "", "TestDifferential: directory to write the fresh kit recordings to (for inspection)")

// diffCase is one recording run against the kit and the simulator.
type diffCase struct {
	name     string
	script   []recLine
	restOnly bool
	alone    bool // must run alone on the PBX

	res  liveResult
	err  error
	done chan struct{} // closed once res/err are set
}

// needsPBXAlone says whether a script must run with no other scenario on the PBX: it
// lists the whole PBX or uses client-chosen channel ids.
func needsPBXAlone(script []recLine) bool {
	for _, l := range script {
		if l.Kind != "rest" {
			continue
		}
		if l.Method == "GET" && (l.Path == "/ari/channels" || l.Path == "/ari/applications" ||
			strings.HasPrefix(l.Path, "/ari/endpoints")) {
			return true
		}
		if queryValue(l.Query, "channelId") != "" || queryValue(l.Query, "otherChannelId") != "" {
			return true
		}
	}
	return false
}

// restartsPBX says whether a script runs `core restart now`.
func restartsPBX(script []recLine) bool {
	return slices.ContainsFunc(script, func(l recLine) bool {
		return l.What == "note" && strings.Contains(l.Text, "core restart now")
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// subscribesAll says whether a script opens a subscribeAll websocket.
func subscribesAll(script []recLine) bool {
	return slices.ContainsFunc(script, func(l recLine) bool {
		return l.What == "ws_connect" && strings.Contains(l.QueryStr, "subscribeAll=true")
	})
}

func TestDifferential(t *testing.T) {
	k := needKit(t)
	begin := time.Now()
	restart := kitRestart()
	var cases []*diffCase
	for _, sc := range covered(t) {
		if why, ok := diffExcluded[sc.name]; ok {
			t.Logf("excluded %s: %s", sc.name, why)
			continue
		}
		script := loadRecording(t, sc.name)
		if restartsPBX(script) && restart == nil {
			t.Logf("excluded %s: it restarts Asterisk and INVOKEARI_TEST_PBX_CTL is not set", sc.name)
			continue
		}
		cases = append(cases, &diffCase{name: sc.name, script: script, restOnly: sc.restOnly,
			alone: needsPBXAlone(script), done: make(chan struct{})})
	}
	if len(cases)+len(diffExcluded) < 160 {
		t.Errorf("%d scenarios + %d excluded, want all 160 recordings", len(cases), len(diffExcluded))
	}
	record := func(c *diffCase, o liveOpts) {
		defer close(c.done)
		o.app = fmt.Sprintf("diff%03d", slices.Index(cases, c))
		c.res, c.err = recordLive(t, k, c.script, o)
		if errors.Is(c.err, errNeedsRestart) {
			c.err = fmt.Errorf("%w: add it to diffExcluded with a reason", c.err)
		}
		if c.err == nil && *diffOut != "" {
			c.err = os.WriteFile(filepath.Join(*diffOut, c.name), c.res.data, 0o644)
		}
	}
	// The longest scripts (sipp-down: timer B, ~34 s) start first.
	byLength := slices.Clone(cases)
	slices.SortStableFunc(byLength, func(a, b *diffCase) int {
		return cmp.Compare(b.script[len(b.script)-1].TMs, a.script[len(a.script)-1].TMs)
	})
	var suball, appOnly, alone []*diffCase
	for _, c := range byLength {
		switch {
		case c.alone:
			alone = append(alone, c)
		case subscribesAll(c.script):
			suball = append(suball, c)
		default:
			appOnly = append(appOnly, c)
		}
	}
	live := make(chan struct{})
	go func() { // owned by this test: the subtests below wait for it
		defer close(live)
		// subscribeAll scenarios run a batch at once, and their websockets are closed
		// together when the batch is over and no call is left (liveOpts.held). The first
		// batch (the longest scripts: sipp-down's timer B, ~34 s) runs alongside every
		// app-only scenario (no device state subscription: they close as scripted), at
		// most diffConcurrency of those at once (each holds one or two of Asterisk's 100
		// HTTP sessions, liveHTTP).
		for i, b := range slices.Collect(slices.Chunk(suball, diffBatch)) {
			var wg sync.WaitGroup
			held := &heldConns{}
			for _, c := range b {
				wg.Add(1)
				go func() { // owned by this goroutine: ends when the script ends
					defer wg.Done()
					record(c, liveOpts{filter: true, held: held})
				}()
			}
			if i == 0 {
				sem := make(chan struct{}, diffConcurrency)
				for _, c := range appOnly {
					sem <- struct{}{}
					wg.Add(1)
					go func() { // owned by this goroutine: ends when the script ends
						defer wg.Done()
						defer func() { <-sem }()
						record(c, liveOpts{})
					}()
				}
			}
			wg.Wait()
			held.closeAll()
		}
		t.Logf("recorded the concurrent scenarios from the kit in %v", time.Since(begin).Round(time.Millisecond))
		// Those that must be alone on the PBX, one after another, on a PBX without
		// channels: the calls of the concurrent scenarios are over.
		if err := clearPBX(k, 10*time.Second); err != nil {
			t.Logf("NOTE before the scenarios that list the whole PBX: %v", err)
		}
		// The scripts that restart Asterisk (`core restart now`) come last: nothing is
		// left to tear down, and the kit is back ~1 s later.
		slices.SortStableFunc(alone, func(a, b *diffCase) int {
			return cmp.Compare(btoi(restartsPBX(a.script)), btoi(restartsPBX(b.script)))
		})
		for _, c := range alone {
			record(c, liveOpts{restart: restart})
		}
		t.Logf("recorded every scenario from the kit in %v", time.Since(begin).Round(time.Millisecond))
	}()
	t.Cleanup(func() {
		<-live
		var resp *http.Response
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; { // ~1 s after a restart
			resp, err = liveHTTP.Get(strings.Replace(k.url, "://", "://invokeari:secret@", 1) + "/asterisk/ping")
			if err == nil {
				resp.Body.Close()
			}
			if err == nil && resp.StatusCode == 200 || time.Now().After(deadline) {
				break
			}
			<-time.After(100 * time.Millisecond) // polling the kit while it boots
		}
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("the kit no longer answers GET /asterisk/ping (%v): ARI wedged, see liveOpts.held", err)
		}
	})
	// The simulator replays run once the kit is done: both are timing-sensitive and
	// share two cores.
	<-live
	ordered := slices.Concat(suball, appOnly, alone) // in the order they are recorded
	t.Run("sim", func(t *testing.T) {
		for _, c := range ordered {
			t.Run(subtestName(c.name, c.restOnly), func(t *testing.T) {
				t.Parallel()
				<-c.done
				if c.err != nil {
					t.Fatalf("recording from the kit: %v", c.err)
				}
				lines, err := parseRecording(bytes.NewReader(c.res.data))
				if err != nil {
					t.Fatalf("fresh recording: %v", err)
				}
				replaySim(t, lines, c.restOnly, "real")
				if t.Failed() {
					t.Logf("the kit's events arrived up to %v after their timestamps; its slowest REST reply took %v", c.res.lag, c.res.slowest)
					if *diffOut == "" {
						t.Logf("rerun with -differential-out DIR to keep the fresh kit recording")
					}
				}
			})
		}
	})
	var lag, slowest time.Duration
	for _, c := range cases {
		lag, slowest = max(lag, c.res.lag), max(slowest, c.res.slowest)
	}
	t.Logf("%d scenarios compared, %d excluded, in %v; the kit's events arrived up to %v late, its REST replies took up to %v",
		len(cases), len(diffExcluded), time.Since(begin).Round(time.Millisecond), lag, slowest)
}

// clearPBX waits up to d for the PBX to have no channels; channels left then (by an
// earlier test, or a scenario whose app is gone: they stay in Stasis for good) are hung
// up, and named in the error.
func clearPBX(k liveARI, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		req, _ := http.NewRequest(http.MethodGet, k.url+"/channels", nil)
		req.SetBasicAuth(k.user, k.pass)
		resp, err := liveHTTP.Do(req)
		if err != nil {
			return err
		}
		var chans []struct{ ID, Name string }
		err = json.NewDecoder(resp.Body).Decode(&chans)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("GET /channels: %w", err)
		}
		if len(chans) == 0 {
			return nil
		}
		if time.Now().Before(deadline) {
			<-time.After(100 * time.Millisecond) // polling the PBX's channel list
			continue
		}
		var names []string
		for _, ch := range chans {
			names = append(names, ch.Name)
			req, _ := http.NewRequest(http.MethodDelete, k.url+"/channels/"+url.PathEscape(ch.ID), nil)
			req.SetBasicAuth(k.user, k.pass)
			if resp, err := liveHTTP.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		// A hung-up channel is gone within a few ms; the alone scenarios would fail on it.
		return fmt.Errorf("%d channels left on the PBX after %v, hung up: %s", len(chans), d, strings.Join(names, ", "))
	}
}
