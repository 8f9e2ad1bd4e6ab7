package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
)

// The floors under K1 (rows K0): a door is one more request/reply hop than direct ARI
// (client → door → Asterisk and back, against client → Asterisk and back). K0 times
// that hop alone, with nothing behind it, asked the same way and at the same rate as
// the doors, so K1's difference can be read as floor + the daemon's own work. On an
// idle VM most of a loopback hop is waking goroutines and vCPUs, not the daemon.

// floorSubject is the NATS floor's subject, answered by floorResponder.
const floorSubject = "invokeari.bench.floor"

// floorReply is what both floors answer: a success envelope of the door's shape.
var floorReply = []byte(`{"status":"success","response":{"success":true,"http_code":200,"response":{"id":"floor","state":"Down"},"curl_error":""}}`)

// startFloors starts a trivial HTTP server and a trivial NATS responder in this process
// and returns the K0 paths asking them with the doors' clients (hc, nc); stop ends both.
func startFloors(hc *http.Client, nc *nats.Conn, natsURL, key string) (floors []*kitPath, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What any door does first: read the form and answer JSON.
		if err := r.ParseForm(); err != nil || r.PostForm.Get("d") == "" {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(floorReply)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }() // ends with Shutdown in stop
	rc, err := nats.Connect(natsURL, nats.Name("invokeari-bench-floor"))
	if err != nil {
		_ = srv.Close()
		<-served
		return nil, nil, fmt.Errorf("connect NATS: %w", err)
	}
	sub, err := rc.Subscribe(floorSubject, func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Data = floorReply
		_ = rc.PublishMsg(r)
	})
	if err == nil {
		err = rc.Flush()
	}
	if err != nil {
		rc.Close()
		_ = srv.Close()
		<-served
		return nil, nil, fmt.Errorf("floor responder: %w", err)
	}
	door := &daemonHTTP{hc: hc, url: "http://" + ln.Addr().String() + "/v2/invokeARI", key: key}
	floors = []*kitPath{
		{name: "one loopback HTTP request/reply to a trivial server in this process (parses the form, answers a fixed envelope)", floor: true,
			send: door.originateID}, // the HTTP door's own request, sent to the trivial server
		{name: "one core NATS request/reply through the embedded server to a trivial responder in this process", floor: true,
			send: (&daemonNATS{nc: nc, key: key, subject: floorSubject}).originateID}, // the NATS door's own request
	}
	for i, f := range floors {
		f.prefix = fmt.Sprintf("f%c", 'h'+i)
	}
	return floors, func() {
		_ = sub.Unsubscribe()
		rc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	}, nil
}
