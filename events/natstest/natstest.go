// Package natstest runs a real in-process nats-server with JetStream for tests.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
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

	// Cluster node only.
	name        string
	clusterName string
	clusterPort int
	routes      func() []*url.URL // the other nodes' route URLs, read at each start
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
	if err := s.tryStart(port); err != nil {
		t.Fatalf("natstest: %v", err)
	}
}

// tryStart starts the server on port (-1: a random one).
func (s *Server) tryStart(port int) error {
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  s.StoreDir,
		NoLog:     true,
		NoSigs:    true,
	}
	if s.clusterName != "" {
		opts.ServerName = s.name
		opts.Cluster.Name = s.clusterName
		opts.Cluster.Host = "127.0.0.1"
		opts.Cluster.Port = s.clusterPort
		opts.Routes = s.routes()
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("new server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		return fmt.Errorf("server not ready on 127.0.0.1:%d (routes on %d) within %s", port, s.clusterPort, readyTimeout)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return errors.New("JetStream did not start")
	}
	s.Server = srv
	s.URL = srv.ClientURL()
	s.port = srv.Addr().(*net.TCPAddr).Port
	if s.clusterName != "" {
		s.clusterPort = srv.ClusterAddr().Port
	}
	return nil
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

// Cluster is a NATS cluster of real in-process servers with JetStream on 127.0.0.1,
// random ports, each storing in its own t.TempDir(). Every node can be stopped
// (Shutdown) and brought back (Restart) on the same ports and store.
type Cluster struct {
	Nodes []*Server
}

// clusterReady bounds how long StartCluster waits for a JetStream meta leader.
const clusterReady = 30 * time.Second

// StartCluster starts n clustered nodes (n ≥ 3 lets JetStream keep R3 streams through
// the loss of one) and waits until JetStream has elected its meta leader.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	// A JetStream cluster node refuses to start without routes, so the route ports are
	// chosen before the first node starts: free ones, found by listening on port 0. One
	// may be taken by another process meanwhile: then the cluster starts again on others.
	var err error
	for range 3 {
		c := &Cluster{}
		for i, port := range freePorts(t, n) {
			s := &Server{StoreDir: t.TempDir(), name: fmt.Sprintf("n%d", i+1), clusterName: "invokeari-test",
				clusterPort: port}
			s.routes = func() []*url.URL { return c.routesExcept(s) }
			c.Nodes = append(c.Nodes, s)
		}
		for _, s := range c.Nodes {
			if err = s.tryStart(-1); err != nil {
				break
			}
		}
		if err != nil {
			for _, s := range c.Nodes {
				s.shutdown()
			}
			continue
		}
		for _, s := range c.Nodes {
			t.Cleanup(s.shutdown)
		}
		c.WaitJetStream(t)
		return c
	}
	t.Fatalf("natstest: cluster did not start: %v", err)
	return nil
}

// freePorts returns n distinct 127.0.0.1 ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: free port: %v", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

func (c *Cluster) routesExcept(self *Server) []*url.URL {
	var out []*url.URL
	for _, s := range c.Nodes {
		if s != self && s.clusterPort > 0 {
			out = append(out, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", s.clusterPort)})
		}
	}
	return out
}

// URL lists every node's client URL, comma-separated, as a daemon's nats.url would.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", s.port)
	}
	return strings.Join(urls, ",")
}

// WaitJetStream waits until a client on the cluster gets JetStream account info, which
// needs an elected meta leader.
func (c *Cluster) WaitJetStream(t testing.TB) {
	t.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("natstest: connect cluster: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	deadline := time.Now().Add(clusterReady)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: cluster JetStream not ready within %s: %v", clusterReady, err)
		}
		time.Sleep(50 * time.Millisecond) // polling pace; the loop has its own deadline
	}
}

// Connect returns a client connection to the whole cluster that reconnects forever and
// a JetStream handle on it; both are closed by t.Cleanup.
func (c *Cluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatalf("natstest: connect cluster: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}
