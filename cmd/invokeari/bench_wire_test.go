package main

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// TestWireTimer: over a real loopback connection, a POST /channels and its reply are
// paired by channel id, another request in between does not shift the pairing, and a
// ChannelDestroyed frame read is attributed to its channel.
func TestWireTimer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvDone := make(chan error, 1)
	go func() { // the fake Asterisk: echoes one reply per request line it reads
		c, err := ln.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		for range 2 {
			if _, err := c.Read(buf); err != nil {
				srvDone <- err
				return
			}
			if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")); err != nil {
				srvDone <- err
				return
			}
		}
		if _, err := c.Read(buf); err != nil { // the client asks for the frame
			srvDone <- err
			return
		}
		_, err = c.Write([]byte(`{"type":"ChannelDestroyed","cause":16,"channel":{"id":"kh0000001","name":"Local/x"}}`))
		srvDone <- err
	}()
	w := newWireTimer()
	c, err := w.dial(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4096)
	sent := time.Now()
	for _, req := range []string{"GET /ari/asterisk/info HTTP/1.1\r\n\r\n",
		"POST /ari/channels?endpoint=Local%2Fx&channelId=kh0000001&timeout=30 HTTP/1.1\r\n\r\n"} {
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(buf); err != nil || !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200")) {
			t.Fatalf("read reply: %q %v", buf[:n], err)
		}
	}
	done := time.Now()
	if _, err := c.Write([]byte("\x81")); err != nil {
		t.Fatal(err)
	}
	var frame []byte
	for !bytes.Contains(frame, []byte("}}")) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		frame = append(frame, buf[:n]...)
	}
	if err := <-srvDone; err != nil {
		t.Fatal(err)
	}
	in, back, ast := w.split([]kitSample{{id: "kh0000001", sent: sent, done: done}, {id: "kh0000002", sent: sent, done: done}})
	if len(in) != 1 || len(back) != 1 || len(ast) != 1 {
		t.Fatalf("split = %v %v %v, want one call timed", in, back, ast)
	}
	if in[0] < 0 || back[0] < 0 || ast[0] < 0 || in[0]+ast[0]+back[0] > done.Sub(sent) {
		t.Errorf("split %v + %v + %v does not fit in %v", in[0], ast[0], back[0], done.Sub(sent))
	}
	ds := w.frameTo(map[string]time.Time{"kh0000001": time.Now(), "other": time.Now()}, sent, time.Now())
	if len(ds) != 1 || ds[0] < 0 {
		t.Errorf("frameTo = %v, want one non-negative duration", ds)
	}
	if ds := w.frameTo(map[string]time.Time{"kh0000001": time.Now()}, time.Now(), time.Now()); len(ds) != 0 {
		t.Errorf("frameTo outside the window = %v, want none", ds)
	}
}

func TestChannelIDAfter(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`,"cause":16,"channel":{"id":"a-1","name":"x"}}`, "a-1"},
		{`, "channel" : { "id" : "b-2" }`, "b-2"},
		{`,"cause":16}`, ""},
		{`,"channel":{"id":"trunc`, ""},
	} {
		if got := channelIDAfter([]byte(tt.in)); got != tt.want {
			t.Errorf("channelIDAfter(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestWriteReportKitTable: the real-PBX rows get their own table with the section's load.
func TestWriteReportKitTable(t *testing.T) {
	var b bytes.Buffer
	writeReport(&b, machineInfo{KitLoadStart: "1.00 2.00 3.00", KitLoadEnd: "4.00 5.00 6.00"},
		[]benchRow{{ID: "K1a", What: "kit row"}, {ID: "1a", What: "sim row"}}, nil, time.Second)
	got := b.String()
	sim, kit := strings.Index(got, "## Simulator"), strings.Index(got, "## Real PBX")
	if sim < 0 || kit < sim || !strings.Contains(got[kit:], "| K1a | kit row") || strings.Contains(got[kit:], "sim row") ||
		!strings.Contains(got[kit:], "1.00 2.00 3.00, at its end: 4.00 5.00 6.00") {
		t.Errorf("report:\n%s", got)
	}
}

// TestKitFailureExplained: only Asterisk's refusal or silence until the deadline excuse a
// failed reply; a transport error is a false failure.
func TestKitFailureExplained(t *testing.T) {
	door, direct := &kitPath{daemon: true}, &kitPath{}
	for _, tt := range []struct {
		path *kitPath
		err  string
		want bool
	}{
		{door, `POST /v2/invokeARI: HTTP 502: {"status":"fail","response":{"success":false,"http_code":0,"response":null,"curl_error":"ari POST /channels: EOF"}}`, false},
		{door, `POST /v2/invokeARI: HTTP 502: {"status":"fail","response":{"success":false,"http_code":503,"response":{"message":"Asterisk not booted"}}}`, true},
		{door, `POST /v2/invokeARI: HTTP 504: {"curl_error":"ari POST /channels: Post \"http://x\": context deadline exceeded"}`, true},
		{door, `nats originate: status "502": {"response":{"http_code":0,"curl_error":"ari POST /channels: unreachable: 7 attempts in 5s, last: EOF"}}`, true},
		{direct, `Post "http://127.0.0.1:18088/ari/channels?x": EOF`, false},
		{direct, `POST /ari/channels: HTTP 500: {"error":"Allocation failed"}`, true},
	} {
		if got := (kitFailure{path: tt.path, id: "x", err: errors.New(tt.err)}).explained(); got != tt.want {
			t.Errorf("explained(%q) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
