package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/bridge/api"
	"github.com/invokeari/invokeari/bridge/natsdoor"
	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// runSim runs the Asterisk simulator alone, with the recordings' endpoints and the demo phones.
func runSim(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(out)
	listen := fs.String("listen", "127.0.0.1:8088", "listen address (loopback)")
	user := fs.String("user", demoARIUser, "ARI username")
	pass := fs.String("pass", demoARIPass, "ARI password")
	if err := fs.Parse(args); err != nil {
		return err
	}
	eps := sim.RecordedEndpoints()
	for k, v := range DemoEndpoints() {
		eps[k] = v
	}
	ctxs := DemoContexts()
	ctxs["sink"] = []string{"s"}
	s := sim.New(sim.Config{Addr: *listen, Username: *user, Password: *pass, Endpoints: eps, Contexts: ctxs,
		BootDelay: time.Second, Logger: slog.New(slog.NewJSONHandler(out, nil))})
	if err := s.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "Asterisk SIMULATOR (not a real PBX) serving ARI at %s (user %s)\n", s.URL(), *user)
	<-ctx.Done()
	return s.Close()
}

// cliCallLimit bounds one `invokeari call`: longer than the largest t (600 s) plus the
// daemon's wait margin; the daemon itself ends every wait (504) well before. The NATS
// client needs the deadline (a context without one is refused), main's context has none.
const cliCallLimit = 15 * time.Minute

// runCall places one call over HTTP or NATS and prints its events as they arrive.
func runCall(ctx context.Context, args []string, out io.Writer, getenv func(string) string) error {
	ctx, cancel := context.WithTimeout(ctx, cliCallLimit)
	defer cancel()
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.SetOutput(out)
	var f api.Fields
	fs.StringVar(&f.D, "d", "", "destination endpoint, e.g. PJSIP/6001")
	fs.StringVar(&f.C, "c", "confirmcode", "dialplan context for the answered call")
	fs.StringVar(&f.E, "e", "s", "extension in that context")
	fs.StringVar(&f.T, "t", "", "seconds to wait for answer")
	fs.StringVar(&f.I, "i", "", "caller id")
	fs.StringVar(&f.V, "v", "", "channel variables NAME=VALUE,...")
	fs.StringVar(&f.Ari, "ari", "", "Asterisk server name or URL")
	fs.StringVar(&f.Wait, "wait", "end", "accepted | answer | end")
	fs.StringVar(&f.ID, "id", "", "call id (default: generated)")
	fs.StringVar(&f.Callback, "callback", "", "status callback URL (signed POSTs of the call's events)")
	fs.StringVar(&f.CallbackEvents, "callback-events", "", "events sent to -callback: initiated,ringing,answered,ended (default ended)")
	via := fs.String("via", "http", "http or nats")
	httpURL := fs.String("url", orDefault(getenv("INVOKEARI_URL"), "http://127.0.0.1:8080/v2/invokeARI"), "HTTP endpoint (env INVOKEARI_URL)")
	natsURL := fs.String("nats", orDefault(getenv("INVOKEARI_NATS_URL"), "nats://127.0.0.1:4222"), "NATS URL (for events, and for -via nats)")
	key := fs.String("key", orDefault(getenv("INVOKEARI_API_KEY"), demoKey), "API key (env INVOKEARI_API_KEY)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.ID == "" {
		f.ID = api.NewID()
	}
	nc, err := nats.Connect(*natsURL, nats.Name("invokeari-call"), nats.Timeout(3*time.Second))
	if err != nil {
		return fmt.Errorf("connect NATS %s (events): %w", *natsURL, err)
	}
	defer nc.Close()
	evs := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(events.SubjectPrefix+"."+f.ID+".>", evs)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second) // FlushWithContext needs a deadline
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return err
	}
	reply := make(chan []byte, 1)
	errc := make(chan error, 1)
	go func() {
		b, err := sendCall(ctx, *via, *httpURL, *key, f, nc)
		if err != nil {
			errc <- err
			return
		}
		reply <- b
	}()
	// Print events as they arrive, and the reply when it comes; stop once both the reply
	// and the `ended` event are in, or a short while after the reply if `ended` is slow
	// (wait=accepted/answer replies come before the call ends).
	var gotReply, ended bool
	var linger <-chan time.Time
	for !(gotReply && ended) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case <-linger:
			fmt.Fprintln(out, "(call still in progress; follow it with: invokeari watch "+f.ID+")")
			return nil
		case m := <-evs:
			var ev events.Event
			if json.Unmarshal(m.Data, &ev) == nil {
				fmt.Fprintf(out, "event %-9s seq=%d state=%s outcome=%s cause=%d dialstatus=%s\n",
					ev.Event, ev.Seq, ev.State, ev.Outcome, ev.Cause, ev.DialStatus)
				ended = ended || ev.Event == events.Ended
			}
		case b := <-reply:
			var pretty bytes.Buffer
			if json.Indent(&pretty, b, "", "  ") == nil {
				b = pretty.Bytes()
			}
			fmt.Fprintf(out, "reply:\n%s\n", b)
			gotReply = true
			linger = time.After(3 * time.Second)
		}
	}
	return nil
}

func sendCall(ctx context.Context, via, httpURL, key string, f api.Fields, nc *nats.Conn) ([]byte, error) {
	fields := map[string]string{"d": f.D, "c": f.C, "e": f.E, "t": f.T, "i": f.I, "v": f.V, "ari": f.Ari,
		"wait": f.Wait, "id": f.ID, "callback": f.Callback, "callback_events": f.CallbackEvents}
	if via == "nats" {
		body, err := json.Marshal(fields)
		if err != nil {
			return nil, err
		}
		m := nats.NewMsg(natsdoor.Subject)
		m.Data = body
		m.Header.Set("X-API-Key", key)
		r, err := nc.RequestMsgWithContext(ctx, m)
		if err != nil {
			return nil, err
		}
		return r.Data, nil
	}
	form := url.Values{}
	for k, v := range fields {
		if v != "" {
			form.Set(k, v)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, httpURL, bytes.NewBufferString(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// runWatch follows call events live, or replays them from the stream first.
func runWatch(ctx context.Context, args []string, out io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(out)
	natsURL := fs.String("nats", orDefault(getenv("INVOKEARI_NATS_URL"), "nats://127.0.0.1:4222"), "NATS URL")
	replay := fs.Bool("replay", false, "replay stored events from the stream "+events.StreamName+" before following")
	if err := fs.Parse(args); err != nil {
		return err
	}
	subject := events.EventSubjects
	if fs.NArg() == 1 {
		subject = events.SubjectPrefix + "." + fs.Arg(0) + ".>"
	}
	nc, err := nats.Connect(*natsURL, nats.Name("invokeari-watch"))
	if err != nil {
		return fmt.Errorf("connect NATS %s: %w", *natsURL, err)
	}
	defer nc.Close()
	show := func(data []byte) { fmt.Fprintf(out, "%s\n", bytes.TrimSpace(data)) }
	if !*replay {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) { show(m.Data) })
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		<-ctx.Done()
		return nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return fmt.Errorf("replay from %s: %w", events.StreamName, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { show(m.Data()) })
	if err != nil {
		return err
	}
	defer cc.Stop()
	<-ctx.Done()
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return ctx.Err()
}
