package natsrv

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
)

func TestParseListen(t *testing.T) {
	tests := []struct {
		listen   string
		wantHost string
		wantPort int
		wantErr  bool
	}{
		{"127.0.0.1:4222", "127.0.0.1", 4222, false},
		{"127.0.0.1:0", "127.0.0.1", -1, false},
		{"127.0.0.1:-1", "127.0.0.1", -1, false},
		{":4222", "127.0.0.1", 4222, false},
		{"127.0.0.1", "", 0, true},
		{"127.0.0.1:x", "", 0, true},
		{"127.0.0.1:70000", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			host, port, err := parseListen(tt.listen)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseListen(%q) err = %v, want error %v", tt.listen, err, tt.wantErr)
			}
			if host != tt.wantHost || port != tt.wantPort {
				t.Errorf("parseListen(%q) = %q, %d; want %q, %d", tt.listen, host, port, tt.wantHost, tt.wantPort)
			}
		})
	}
}

func start(t *testing.T, listen string) *Embedded {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	e, err := Start(ctx, Config{Listen: listen, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Start(%q): %v", listen, err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

func TestStartJetStreamWorks(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:-1", "127.0.0.1:0"} {
		t.Run(listen, func(t *testing.T) {
			e := start(t, listen)
			if !strings.HasPrefix(e.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(e.ClientURL(), ":4222") {
				t.Fatalf("ClientURL() = %q, want a random 127.0.0.1 port", e.ClientURL())
			}
			nc, err := nats.Connect(e.ClientURL())
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
				t.Fatalf("create stream: %v", err)
			}
			ack, err := js.Publish(ctx, "t.1", []byte("hello"))
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			if got, want := ack.Sequence, uint64(1); got != want {
				t.Errorf("ack sequence = %d, want %d", got, want)
			}
		})
	}
}

func TestShutdownTwice(t *testing.T) {
	e := start(t, "127.0.0.1:-1")
	url := e.ClientURL()
	e.Shutdown()
	e.Shutdown()
	if nc, err := nats.Connect(url, nats.Timeout(time.Second)); err == nil {
		nc.Close()
		t.Fatalf("connect after Shutdown succeeded, want refused")
	}
}

func TestStartPortInUse(t *testing.T) {
	e := start(t, "127.0.0.1:-1")
	port := e.ClientURL()[strings.LastIndex(e.ClientURL(), ":")+1:]
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	begin := time.Now()
	e2, err := Start(ctx, Config{Listen: "127.0.0.1:" + port, StoreDir: t.TempDir()})
	if err == nil {
		e2.Shutdown()
		t.Fatalf("Start on a port in use succeeded, want error")
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("Start on a port in use took %s, want a prompt error", took)
	}
}

// TestLogKeepsOnlyWarningsAndErrors: at the daemon's default level (info) a start logs
// none of nats-server's chatter (banner, version, listen and JetStream notices), while
// its warnings and errors still reach the log.
func TestLogKeepsOnlyWarningsAndErrors(t *testing.T) {
	var buf syncBuf
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	e, err := Start(ctx, Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	e.Shutdown()
	if got := buf.String(); got != "" {
		t.Errorf("a start and shutdown logged at info level or above:\n%s", got)
	}

	var dbg syncBuf
	l := &slogLogger{log: slog.New(slog.NewTextHandler(&dbg, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Noticef("Starting nats-server")
	l.Warnf("disk %s low", "store")
	l.Errorf("stream %s lost", "X")
	for _, want := range []string{`level=DEBUG msg="Starting nats-server"`, `level=WARN msg="disk store low"`, `level=ERROR msg="stream X lost"`} {
		if !strings.Contains(dbg.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, dbg.String())
		}
	}
}

// syncBuf is a bytes.Buffer safe for the server's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestClusterOfEmbeddedServers: three embedded servers given each other's routes form a
// JetStream cluster that keeps a stream on three replicas, so a three-machine
// deployment needs no separate NATS install.
func TestClusterOfEmbeddedServers(t *testing.T) {
	var ports []int
	var lns []net.Listener
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close() // the ports were free a moment ago; the servers take them now
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var urls []string
	for i, p := range ports {
		e, err := Start(ctx, Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), ServerName: fmt.Sprintf("node%d", i+1),
			Cluster: &ClusterConfig{Name: "demo", Listen: fmt.Sprintf("127.0.0.1:%d", p), Routes: routes}})
		if err != nil {
			t.Fatalf("Start node %d: %v", i+1, err)
		}
		t.Cleanup(e.Shutdown)
		if got, want := e.ClusterURL(), routes[i]; got != want {
			t.Errorf("ClusterURL() = %q, want %q", got, want)
		}
		urls = append(urls, e.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var st jetstream.Stream
	err = events.RetryUnavailable(ctx, func(ctx context.Context) error {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3})
		return err
	})
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Name != "demo" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream cluster info = %+v, want cluster demo with a leader and two replicas", info.Cluster)
	}
}

func TestClusterConfigRefused(t *testing.T) {
	for _, c := range []ClusterConfig{
		{Listen: "127.0.0.1:-1", Routes: []string{"nats-route://127.0.0.1:1"}},              // no name
		{Name: "a.b", Listen: "127.0.0.1:-1", Routes: []string{"nats-route://127.0.0.1:1"}}, // dotted name
		{Name: "demo", Listen: "127.0.0.1", Routes: []string{"nats-route://127.0.0.1:1"}},   // no port
		{Name: "demo", Listen: "127.0.0.1:-1", Routes: []string{"127.0.0.1:1"}},             // not a URL
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		e, err := Start(ctx, Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Cluster: &c})
		cancel()
		if err == nil {
			e.Shutdown()
			t.Errorf("Start with cluster %+v succeeded, want an error", c)
		}
	}
}
