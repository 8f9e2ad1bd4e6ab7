package events_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
)

func TestConnect(t *testing.T) {
	s := natstest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	nc, err := events.Connect(ctx, s.URL)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer nc.Close()
	if !nc.IsConnected() {
		t.Fatal("not connected")
	}
	if got := nc.Opts.MaxReconnect; got != -1 {
		t.Errorf("MaxReconnect = %d, want -1 (reconnect forever)", got)
	}
}

func TestConnectWaitsForCtx(t *testing.T) {
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://user:secret@" + l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	nc, err := events.Connect(ctx, url)
	if err == nil {
		nc.Close()
		t.Fatal("Connect to a closed port = nil error, want error")
	}
	if !isDeadline(err) {
		t.Errorf("Connect error = %v, want deadline exceeded", err)
	}
	if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "user") {
		t.Errorf("Connect error %q leaks credentials", err)
	}
}

func TestConnectReachesServerStartedLater(t *testing.T) {
	s := natstest.Start(t)
	url := s.URL
	s.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	type res struct {
		ok  bool
		err error
	}
	done := make(chan res, 1)
	go func() {
		nc, err := events.Connect(ctx, url)
		if err == nil {
			defer nc.Close()
		}
		done <- res{err == nil && nc.IsConnected(), err}
	}()
	s.Restart(t)
	if r := <-done; !r.ok {
		t.Fatalf("Connect after the server came up: %v", r.err)
	}
}

func TestOptionsNATSOptions(t *testing.T) {
	dir := t.TempDir()
	badSeed := filepath.Join(dir, "bad.nk")
	if err := os.WriteFile(badSeed, []byte("not a seed"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    events.Options
		wantErr bool
	}{
		{"none", events.Options{}, false},
		{"user password", events.Options{User: "u", Password: "p"}, false},
		{"token", events.Options{Token: "t"}, false},
		{"creds", events.Options{CredsFile: "/x.creds"}, false},
		{"tls", events.Options{TLSCAFile: "ca.pem", TLSCertFile: "c.pem", TLSKeyFile: "k.pem"}, false},
		{"user and token", events.Options{User: "u", Token: "t"}, true},
		{"token and creds", events.Options{Token: "t", CredsFile: "/x.creds"}, true},
		{"cert without key", events.Options{TLSCertFile: "c.pem"}, true},
		{"missing nkey seed", events.Options{NKeySeedFile: filepath.Join(dir, "none.nk")}, true},
		{"bad nkey seed", events.Options{NKeySeedFile: badSeed}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.opts.NATSOptions()
			if (err != nil) != tt.wantErr {
				t.Errorf("NATSOptions() error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
