package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natsrv"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// pipeScenario is one recorded call as our app's websocket saw it: its frames, and
// where the originated channel's id sits in each, so a copy can carry another id.
type pipeScenario struct {
	name   string
	chanID string
	frames []pipeFrame
}

type pipeFrame struct {
	data []byte
	offs []int // byte offsets of chanID in data
}

// loadPipeScenarios reads the app-originate recordings of what an app sees without
// subscribeAll (s2_stasis_*.nosuball.jsonl) whose POST /channels was accepted.
func loadPipeScenarios(dir string) ([]pipeScenario, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "s2_stasis_*.nosuball.jsonl"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []pipeScenario
	for _, p := range paths {
		sc, err := readPipeScenario(p)
		if err != nil {
			return nil, err
		}
		if sc.chanID != "" && len(sc.frames) > 0 {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no app-originate recordings in %s", dir)
	}
	return out, nil
}

func readPipeScenario(path string) (pipeScenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return pipeScenario{}, err
	}
	defer f.Close()
	sc := pipeScenario{name: filepath.Base(path)}
	var raw [][]byte
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<24)
	for s.Scan() {
		var line struct {
			Kind         string          `json:"kind"`
			Method       string          `json:"method"`
			Path         string          `json:"path"`
			Status       int             `json:"status"`
			Event        json.RawMessage `json:"event"`
			ResponseBody json.RawMessage `json:"response_body"`
		}
		if err := json.Unmarshal(s.Bytes(), &line); err != nil {
			return sc, fmt.Errorf("%s: %w", path, err)
		}
		switch {
		case line.Kind == "ws" && len(line.Event) > 0:
			raw = append(raw, bytes.Clone(line.Event))
		case line.Kind == "rest" && line.Method == "POST" && line.Path == "/ari/channels" && line.Status == 200 && sc.chanID == "":
			var ch struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(line.ResponseBody, &ch) == nil {
				sc.chanID = ch.ID
			}
		}
	}
	if err := s.Err(); err != nil {
		return sc, fmt.Errorf("%s: %w", path, err)
	}
	if sc.chanID == "" {
		return sc, nil
	}
	needle := []byte(sc.chanID)
	for _, d := range raw {
		fr := pipeFrame{data: d}
		for i := 0; ; {
			j := bytes.Index(d[i:], needle)
			if j < 0 {
				break
			}
			fr.offs = append(fr.offs, i+j)
			i += j + len(needle)
		}
		sc.frames = append(sc.frames, fr)
	}
	return sc, nil
}

// pipeARI is an Asterisk that accepts every originate and whose event stream is fed by
// the benchmark: Run hands the App's handler over and waits for ctx.
type pipeARI struct{ handler chan ari.Handler }

func (p *pipeARI) Originate(_ context.Context, o ari.OriginateParams) (ari.Channel, error) {
	return ari.Channel{ID: o.ChannelID, Name: o.Endpoint + "-00000001", State: "Down"}, nil
}
func (p *pipeARI) Continue(context.Context, string, string, string, int) error { return nil }
func (p *pipeARI) Hangup(context.Context, string, string) error                { return nil }
func (p *pipeARI) GetChannel(context.Context, string) (ari.Channel, error) {
	return ari.Channel{}, &ari.Error{Status: 404, Message: "Channel not found"}
}
func (p *pipeARI) GetEndpoint(context.Context, string, string) (ari.Endpoint, error) {
	return ari.Endpoint{}, nil
}
func (p *pipeARI) AsteriskInfo(context.Context) (ari.AsteriskInfo, error) {
	return ari.AsteriskInfo{}, nil
}
func (p *pipeARI) Run(ctx context.Context, h ari.Handler) error {
	h.Connected(ctx, false)
	p.handler <- h
	<-ctx.Done()
	h.Disconnected(ctx.Err())
	return ctx.Err()
}

var _ stasisapp.Asterisk = (*pipeARI)(nil)

// timedPublisher is the App's publisher during the pipeline bench: it notes, for each
// event, when the frame that caused it was received, and the JetStream ack handler
// turns that into a frame→acked latency.
type timedPublisher struct {
	*events.Publisher
	frameAt atomic.Int64 // unix ns of the frame being handled; 0 outside frames
	calls   atomic.Uint64

	mu      sync.Mutex
	pending map[string]int64 // Nats-Msg-Id → frame time
	lat     []time.Duration
	record  bool
}

func (p *timedPublisher) Publish(ctx context.Context, ev events.Event) error {
	p.calls.Add(1)
	if at := p.frameAt.Load(); at != 0 {
		p.mu.Lock()
		if p.record {
			p.pending[events.MsgID(ev.ID, ev.Seq)] = at
		}
		p.mu.Unlock()
	}
	return p.Publisher.Publish(ctx, ev)
}

// acked is the JetStream ack handler.
func (p *timedPublisher) acked(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
	now := time.Now().UnixNano()
	id := m.Header.Get(jetstream.MsgIDHeader)
	p.mu.Lock()
	if at, ok := p.pending[id]; ok {
		delete(p.pending, id)
		p.lat = append(p.lat, time.Duration(now-at))
	}
	p.mu.Unlock()
}

// pipelineResult is what the event pipeline bench measured.
type pipelineResult struct {
	frames, calls      int
	published          uint64 // events acked by JetStream during the timed run
	publishCalls       uint64 // events the App handed to the publisher during the timed run
	elapsed, fed, cpu  time.Duration
	decodeOnly         float64 // frames/s of ari.DecodeEvent alone on the same frames
	decodeErrs         int
	dropped            uint64 // publish failures + events handed over but not acked
	notEnded           int    // calls still in flight after their last frame
	paceRate           float64
	lat                []time.Duration // frame → ack at paceRate
	latLight           []time.Duration // frame → ack at pipeLightRate
	streamMsgs, wanted uint64
}

// rate is frames per wall-clock second.
func (r pipelineResult) rate() float64 { return float64(r.frames) / r.elapsed.Seconds() }

// perCore is frames per second of CPU time on one core (GOMAXPROCS 1), or the wall
// rate where CPU time is unknown.
func (r pipelineResult) perCore() float64 {
	if r.cpu <= 0 {
		return r.rate()
	}
	return float64(r.frames) / r.cpu.Seconds()
}

// benchPipeline measures the event pipeline in this process, on GOMAXPROCS(1): recorded
// websocket frames (bytes) → ari.DecodeEvent → the App's handler (dispatch by channel
// id, Call.Apply, waiter wake-up) → events.Publisher → JetStream (embedded nats-server,
// file storage) → ack. Only the websocket framing itself is left out.
func benchPipeline(ctx context.Context, dir, recordings string, calls int, paceFor time.Duration, paceMax float64) (pipelineResult, error) {
	var res pipelineResult
	scs, err := loadPipeScenarios(recordings)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	emb, err := natsrv.Start(ctx, natsrv.Config{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "pipeline-nats")})
	if err != nil {
		return res, err
	}
	defer emb.Shutdown()
	nc, err := events.Connect(ctx, emb.ClientURL())
	if err != nil {
		return res, err
	}
	defer nc.Close()
	tp := &timedPublisher{pending: map[string]int64{}}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncAckHandler(tp.acked))
	if err != nil {
		return res, err
	}
	if err := events.EnsureStream(ctx, js, time.Hour); err != nil {
		return res, err
	}
	tp.Publisher = events.NewPublisher(js, events.PublisherConfig{})
	fake := &pipeARI{handler: make(chan ari.Handler, 1)}
	app, err := stasisapp.New(stasisapp.Config{
		Servers:   []stasisapp.Server{{Name: "pipe", AppName: "invokeari", ARI: fake}},
		Publisher: tp,
		// The daemon logs every ended call as JSON; so does this, to nowhere.
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		return res, err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); _ = tp.Publisher.Run(ctx) }()
	go func() { defer wg.Done(); _ = app.Run(ctx) }()
	var h ari.Handler
	select {
	case h = <-fake.handler:
	case <-ctx.Done():
		return res, ctx.Err()
	}

	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)

	feed := &pipeFeeder{app: app, h: h, tp: tp, scs: scs}
	// Warm up: cold maps, pools and stream blocks.
	if _, err := feed.run(ctx, "w", min(calls/10, 2000)); err != nil {
		return res, err
	}

	// Throughput: as fast as the pipeline takes it, until the last event is acked.
	pub0 := tp.Published()
	st, err := feed.run(ctx, "t", calls)
	if err != nil {
		return res, err
	}
	res.calls, res.frames, res.decodeErrs, res.elapsed, res.fed, res.cpu = calls, st.frames, st.decodeErrs, st.elapsed, st.fed, st.cpu
	res.publishCalls, res.published = st.published, tp.Published()-pub0-uint64(st.initiated)

	// The decoder alone over the same frames, for the share it takes.
	res.decodeOnly = feed.decodeOnly(res.frames)

	// Latency: paced, near saturation (70% of the rate above, at most the target) and at
	// a light fixed load, so the figures are the pipeline's and not only a queue's.
	res.paceRate = min(paceMax, 0.7*res.rate())
	for _, pace := range []struct {
		prefix string // call ids must not repeat: a repeated id is an idempotent replay
		rate   float64
		lat    *[]time.Duration
	}{{"l", res.paceRate, &res.lat}, {"m", pipeLightRate, &res.latLight}} {
		tp.mu.Lock()
		tp.record, tp.lat = true, nil
		tp.mu.Unlock()
		pst, err := feed.runPaced(ctx, pace.prefix, paceFor, pace.rate)
		if err != nil {
			return res, err
		}
		tp.mu.Lock()
		tp.record, *pace.lat = false, tp.lat
		tp.mu.Unlock()
		res.decodeErrs += pst.decodeErrs
	}
	res.notEnded = app.InFlight()

	// Nothing dropped: every event handed to the publisher is acked and in the stream.
	si, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return res, err
	}
	info, err := si.Info(ctx)
	if err != nil {
		return res, err
	}
	res.streamMsgs, res.wanted = info.State.Msgs, tp.calls.Load()
	res.dropped = app.PublishFailures()
	if acked := tp.Published(); acked < res.wanted {
		res.dropped += res.wanted - acked
	}
	return res, nil
}

// pipeLightRate is the light fixed load (frames/s) of the second latency figure.
const pipeLightRate = 10_000

// pipeFeeder plays recorded frames into the App the way the websocket reader does:
// one goroutine, decode, HandleEvent, in order per connection.
type pipeFeeder struct {
	app *stasisapp.App
	h   ari.Handler
	tp  *timedPublisher
	scs []pipeScenario
	buf []byte
}

type feedStats struct {
	frames, decodeErrs, initiated int
	published                     uint64        // events the App handed over while frames were fed
	elapsed                       time.Duration // first frame until the last event was acked
	fed                           time.Duration // first frame until the last frame was handled
	cpu                           time.Duration // process CPU time over elapsed (0: unknown)
}

// pipeGroup is how many calls are interleaved frame by frame, as concurrent calls are
// on a real websocket.
const pipeGroup = 256

// pipeItem is one frame to play: frame fr of scenario sc, for call id.
type pipeItem struct {
	sc, fr int
	id     string
}

// prepare originates calls [0, calls) on the fake Asterisk (one `initiated` event each,
// flushed before returning) and lists their frames, pipeGroup calls interleaved.
func (f *pipeFeeder) prepare(ctx context.Context, prefix string, calls int) ([]pipeItem, error) {
	var items []pipeItem
	for g := 0; g < calls; g += pipeGroup {
		end := min(g+pipeGroup, calls)
		ids := make([]string, 0, end-g)
		for i := g; i < end; i++ {
			sc := f.scs[i%len(f.scs)]
			id := pipeID(prefix, i, len(sc.chanID))
			_, err := f.app.Originate(ctx, stasisapp.Request{ID: id, Server: "pipe", Endpoint: "PJSIP/bench", Context: "confirmcode",
				Extension: "s", Timeout: 30 * time.Second, Wait: stasisapp.WaitAccepted, Key: "bench", Door: "bench"})
			if err != nil {
				return nil, fmt.Errorf("register pipeline call: %w", err)
			}
			ids = append(ids, id)
		}
		for step, more := 0, true; more; step++ {
			more = false
			for k, id := range ids {
				sc := (g + k) % len(f.scs)
				if step < len(f.scs[sc].frames) {
					items = append(items, pipeItem{sc: sc, fr: step, id: id})
					more = true
				}
			}
		}
	}
	return items, f.tp.Flush(ctx)
}

// pipeID is a call id exactly as long as the recorded channel id it replaces.
func pipeID(prefix string, i, n int) string {
	s := strconv.Itoa(i)
	pad := n - len(prefix) - len(s)
	if pad < 0 {
		return (prefix + s)[:n] // never for the recordings' ids (≥ 12 chars) and our counts
	}
	return prefix + strings.Repeat("0", pad) + s
}

// feed plays one frame: copy into the read buffer, stamp, decode, handle.
func (f *pipeFeeder) feed(ctx context.Context, it pipeItem) bool {
	fr := &f.scs[it.sc].frames[it.fr]
	f.buf = append(f.buf[:0], fr.data...)
	for _, off := range fr.offs {
		copy(f.buf[off:], it.id)
	}
	f.tp.frameAt.Store(time.Now().UnixNano())
	ev, err := ari.DecodeEvent(f.buf)
	if err != nil {
		return false
	}
	f.h.HandleEvent(ctx, ev)
	return true
}

// run feeds `calls` calls at full speed and waits until every event is acked.
func (f *pipeFeeder) run(ctx context.Context, prefix string, calls int) (feedStats, error) {
	st := feedStats{initiated: calls}
	items, err := f.prepare(ctx, prefix, calls)
	if err != nil {
		return st, err
	}
	c0 := f.tp.calls.Load()
	cpu0, cpuOK := processCPU()
	start := time.Now()
	for _, it := range items {
		if !f.feed(ctx, it) {
			st.decodeErrs++
		}
	}
	f.tp.frameAt.Store(0)
	st.fed = time.Since(start)
	if err := f.tp.Flush(ctx); err != nil {
		return st, err
	}
	st.elapsed = time.Since(start)
	if cpu1, ok := processCPU(); ok && cpuOK {
		st.cpu = cpu1 - cpu0
	}
	st.frames = len(items)
	st.published = f.tp.calls.Load() - c0
	return st, nil
}

// decodeOnly is frames/s of ari.DecodeEvent alone (copy, rewrite, decode; no handler)
// over n frames cycling through the recordings, on CPU time where known.
func (f *pipeFeeder) decodeOnly(n int) float64 {
	cpu0, cpuOK := processCPU()
	start := time.Now()
	done := 0
	for done < n {
		for _, sc := range f.scs {
			id := pipeID("d", done, len(sc.chanID))
			for _, fr := range sc.frames {
				f.buf = append(f.buf[:0], fr.data...)
				for _, off := range fr.offs {
					copy(f.buf[off:], id)
				}
				if _, err := ari.DecodeEvent(f.buf); err == nil {
					done++
				}
			}
		}
	}
	el := time.Since(start)
	if cpu1, ok := processCPU(); ok && cpuOK && cpu1 > cpu0 {
		el = cpu1 - cpu0
	}
	return float64(done) / el.Seconds()
}

// runPaced feeds calls for about dur at rate frames/s: each millisecond the frames due
// by then, then the goroutine waits for the next millisecond as a websocket reader
// waits for the next frame.
func (f *pipeFeeder) runPaced(ctx context.Context, prefix string, dur time.Duration, rate float64) (feedStats, error) {
	var st feedStats
	frames := 0
	for _, sc := range f.scs {
		frames += len(sc.frames)
	}
	calls := max(pipeGroup, int(rate*dur.Seconds())*len(f.scs)/frames)
	items, err := f.prepare(ctx, prefix, calls)
	if err != nil {
		return st, err
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	sent := 0
	for sent < len(items) {
		due := min(len(items), int(rate*time.Since(start).Seconds()))
		for ; sent < due; sent++ {
			if !f.feed(ctx, items[sent]) {
				st.decodeErrs++
			}
		}
		f.tp.frameAt.Store(0)
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-tick.C:
		}
	}
	st.frames = sent
	if err := f.tp.Flush(ctx); err != nil {
		return st, err
	}
	st.elapsed = time.Since(start)
	return st, nil
}
