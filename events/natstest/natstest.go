// Package natstest runs a real in-process nats-server with JetStream for tests.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readyTimeout bounds how long a test waits for the server to listen.
const readyTimeout = 10 * time.Second

// Server is an in-process nats-server with JetStream on 127.0.0.1. It is shut down
// by t.Cleanup. Restart must not run concurrently with other uses of Server.
type Server struct {
	*server.Server
	URL      string // client URL, nats://127.0.0.1:<port>
	StoreDir string // JetStream store directory, kept across Restart

	port int
}

// Start runs a nats-server on a random 127.0.0.1 port with JetStream storing in
// t.TempDir(). Server logs are off.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{StoreDir: t.TempDir()}
	s.start(t, -1)
	t.Cleanup(s.shutdown)
	return s
}

// Restart shuts the server down and starts it again on the same port and store
// directory, as a NATS restart in production would. Streams and their messages
// survive. It also brings back a server stopped with Shutdown.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.shutdown()
	s.start(t, s.port)
}

func (s *Server) start(t testing.TB, port int) {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  s.StoreDir,
		NoLog:     true,
		NoSigs:    true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		t.Fatalf("natstest: server not ready on 127.0.0.1:%d within %s", port, readyTimeout)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		t.Fatalf("natstest: JetStream did not start")
	}
	s.Server = srv
	s.URL = srv.ClientURL()
	s.port = srv.Addr().(*net.TCPAddr).Port
}

func (s *Server) shutdown() {
	if s.Server == nil {
		return
	}
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
}

// Connect returns a client connection that reconnects forever (it survives Restart)
// and a JetStream handle on it; both are closed by t.Cleanup.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(0, 0),
	)
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", s.URL, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}
