// Package natsrv runs the daemon's embedded nats-server with JetStream, used when no
// external NATS URL is configured (SPEC §3).
package natsrv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Defaults for Config.
const (
	DefaultListen   = "127.0.0.1:4222"
	DefaultStoreDir = "./data/nats"
)

// defaultReadyWait bounds the readiness wait when ctx has no deadline.
const defaultReadyWait = 30 * time.Second

// Config is the embedded server's configuration.
type Config struct {
	// Listen is host:port for clients (default 127.0.0.1:4222). Port 0 or -1 picks a
	// free port.
	Listen string
	// StoreDir is where JetStream keeps its files (default ./data/nats).
	StoreDir string
	// Logger receives the server's warnings and errors, and its notices at debug level
	// (default: discard).
	Logger *slog.Logger
	// ServerName names this server (default "invokeari"); in a cluster every node needs
	// its own.
	ServerName string
	// Cluster, when set, makes this server a node of a NATS cluster, so that JetStream
	// replicates streams over several machines without a separate NATS install.
	Cluster *ClusterConfig
}

// ClusterConfig joins the embedded server to a NATS cluster.
type ClusterConfig struct {
	// Name is the cluster's name, the same on every node (required).
	Name string
	// Listen is host:port where this node accepts routes from the others (required).
	Listen string
	// Routes are the other nodes' route URLs, nats-route://host:port (listing this node
	// too is harmless).
	Routes []string
}

// Embedded is a running in-process nats-server. Its goroutines belong to the
// server and end with Shutdown. Methods are safe for concurrent use.
type Embedded struct {
	srv  *server.Server
	once sync.Once
}

// Start runs nats-server in-process with JetStream and waits until it accepts
// clients, or until ctx ends.
func Start(ctx context.Context, cfg Config) (*Embedded, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.StoreDir == "" {
		cfg.StoreDir = DefaultStoreDir
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host, port, err := parseListen(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	name := cfg.ServerName
	if name == "" {
		name = "invokeari"
	}
	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true, // signals belong to main
	}
	if cfg.Cluster != nil {
		if err := clusterOptions(opts, *cfg.Cluster); err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	logger := &slogLogger{log: log.With("component", "nats-server")}
	srv.SetLogger(logger, false, false)

	// Start is synchronous up to opening the listener; a failure there or in
	// JetStream is reported through Fatalf, which logger records.
	srv.Start()
	e := &Embedded{srv: srv}
	if msg := logger.fatal(); msg != "" {
		e.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s: %s", cfg.Listen, msg)
	}
	if err := waitReady(ctx, srv); err != nil {
		e.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s: %w", cfg.Listen, err)
	}
	if !srv.JetStreamEnabled() {
		e.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s: JetStream not enabled", cfg.Listen)
	}
	return e, nil
}

// ClientURL is the URL clients connect to, e.g. nats://127.0.0.1:4222.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits until it has stopped. It is safe to call
// more than once.
func (e *Embedded) Shutdown() {
	e.once.Do(func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	})
}

func waitReady(ctx context.Context, srv *server.Server) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultReadyWait)
	}
	// Poll in short steps so a cancelled ctx is noticed promptly.
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("not ready: %w", err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("not ready before deadline")
		}
		if srv.ReadyForConnections(min(left, 100*time.Millisecond)) {
			return nil
		}
	}
}

// clusterOptions sets the route listener and routes of a cluster node.
func clusterOptions(opts *server.Options, c ClusterConfig) error {
	if c.Name == "" {
		return errors.New("cluster: name is required")
	}
	if strings.ContainsAny(c.Name, " .*>") {
		return fmt.Errorf("cluster: name %q must not contain spaces, dots or wildcards", c.Name)
	}
	host, port, err := parseListen(c.Listen)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	opts.Cluster.Name = c.Name
	opts.Cluster.Host = host
	opts.Cluster.Port = port
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return fmt.Errorf("cluster: route %q: want nats-route://host:port", r)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// ClusterURL is the route URL other nodes reach this one at (empty when not clustered).
func (e *Embedded) ClusterURL() string {
	addr := e.srv.ClusterAddr()
	if addr == nil {
		return ""
	}
	return "nats-route://" + addr.String()
}

// parseListen splits host:port; port 0 and -1 mean a random free port.
func parseListen(listen string) (string, int, error) {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("listen %q: bad port", listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as its default 4222
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return host, port, nil
}
