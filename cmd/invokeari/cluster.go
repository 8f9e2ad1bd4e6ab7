package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natsrv"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// clusterWait bounds how long a starting daemon waits for its NATS cluster to have a
// JetStream leader and enough peers for the replicas: the nodes of an embedded cluster
// start with their daemons, so the first one waits for a second.
const clusterWait = 2 * time.Minute

// embeddedConfig is the embedded nats-server's configuration: in a cluster its server
// name is the instance id (JetStream needs a distinct name per node).
func embeddedConfig(cfg Config, log *slog.Logger) natsrv.Config {
	c := natsrv.Config{Listen: cfg.NATS.Embedded.Listen, StoreDir: cfg.NATS.Embedded.StoreDir, Logger: log}
	if cl := cfg.NATS.Embedded.Cluster; cl != nil {
		c.ServerName = cfg.InstanceID
		c.Cluster = &natsrv.ClusterConfig{Name: cl.Name, Listen: cl.Listen, Routes: cl.Routes}
	}
	return c
}

// ensureStream creates or updates INVOKEARI_CALLS with the configured replicas,
// waiting for a forming cluster.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, clusterWait)
	defer cancel()
	return events.EnsureReplicatedStream(ctx, js, cfg.NATS.StreamMaxAge, cfg.NATS.Replicas)
}

// openLease opens this instance's lease in INVOKEARI_LEASES.
func openLease(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*events.Lease, error) {
	apps := make(map[string]string, len(cfg.Asterisk))
	for _, a := range cfg.Asterisk {
		apps[a.Name] = a.App
	}
	ctx, cancel := context.WithTimeout(ctx, clusterWait)
	defer cancel()
	l, err := events.OpenLease(ctx, js, events.LeaseConfig{Instance: cfg.InstanceID, Apps: apps,
		Replicas: cfg.NATS.Replicas, Logger: log.With("component", "lease")})
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	return l, nil
}

// registerLease adds the instance and lease gauges.
func (m *metrics) registerLease(l *events.Lease) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "invokeari_instance_info",
			Help: "Always 1; the label names this daemon's instance id.", ConstLabels: prometheus.Labels{"instance_id": l.Instance()}},
			func() float64 { return 1 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "invokeari_lease_held",
			Help: "1 while this daemon's lease (heartbeat in INVOKEARI_LEASES) is held, 0 once it lapsed."},
			func() float64 {
				if l.State().Held {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "invokeari_lease_lapses_total",
			Help: "Times this daemon's own lease lapsed (peers may then adopt its calls)."},
			func() float64 { return float64(l.State().Lapses) }),
	)
}

// openRegistry opens the call registry with this instance as the owner of its records.
func openRegistry(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*events.Registry, error) {
	ctx, cancel := context.WithTimeout(ctx, clusterWait)
	defer cancel()
	var reg *events.Registry
	// Each try has its own deadline: on a forming cluster a request may get no answer.
	err := events.RetryUnavailable(ctx, func(ctx context.Context) error {
		var err error
		reg, err = events.OpenRegistry(ctx, js, events.RegistryConfig{Owner: cfg.InstanceID, MaxAge: callStoreTTL,
			Logger: log.With("component", "registry"), Replicas: cfg.NATS.Replicas})
		return err
	})
	return reg, err
}

// idClaimTTL is how long a claimed call id is kept: longer than any call plus the
// idempotency retention, so a repeated id is never dialled by another daemon.
const idClaimTTL = 2 * time.Hour

// clusterConfig wires scale-out into the Stasis app when cluster.enabled is set.
func clusterConfig(ctx context.Context, js jetstream.JetStream, cfg Config, lease *events.Lease,
	reg *events.Registry, log *slog.Logger) (*stasisapp.ClusterConfig, error) {
	if !cfg.Cluster.Enabled {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, clusterWait)
	defer cancel()
	ids, err := events.OpenIDClaims(ctx, js, idClaimTTL, cfg.NATS.Replicas)
	if err != nil {
		return nil, err
	}
	return &stasisapp.ClusterConfig{Instance: cfg.InstanceID, IDs: ids, Peers: lease, Records: reg, Events: reg,
		LeaseTTL: lease.TTL(), AdoptRate: cfg.Cluster.AdoptRate, AdoptWorkers: cfg.Cluster.AdoptWorkers,
		Attach: attachFunc(cfg, log)}, nil
}

// attachFunc builds ARI clients for a configured server under another daemon's app name
// (held by an adopter for the calls it adopted from that daemon).
func attachFunc(cfg Config, log *slog.Logger) func(server, app string) (stasisapp.Asterisk, error) {
	return func(server, app string) (stasisapp.Asterisk, error) {
		for _, a := range cfg.Asterisk {
			if a.Name == server {
				return ari.NewClient(ari.Config{URL: a.URL, Username: a.Username, Password: a.password, App: app,
					Logger: log.With("component", "ari", "server", a.Name, "held_app", app)})
			}
		}
		return nil, fmt.Errorf("server %q is not configured here", server)
	}
}

// registerCluster adds the ownership and adoption gauges.
func (m *metrics) registerCluster(app *stasisapp.App) {
	if _, ok := app.ClusterStatus(); !ok {
		return
	}
	status := func(f func(stasisapp.ClusterStatus) float64) func() float64 {
		return func() float64 {
			st, _ := app.ClusterStatus()
			return f(st)
		}
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "invokeari_calls_adopted_in_flight",
			Help: "Calls in flight this daemon adopted from a peer whose lease lapsed."},
			status(func(st stasisapp.ClusterStatus) float64 { return float64(st.AdoptedLive) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "invokeari_calls_adopted_total",
			Help: "Calls this daemon adopted from peers whose lease lapsed."},
			status(func(st stasisapp.ClusterStatus) float64 { return float64(st.AdoptedTotal) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "invokeari_adoptions_lost_total",
			Help: "Adoptions another survivor won (its claim on the record came first)."},
			status(func(st stasisapp.ClusterStatus) float64 { return float64(st.ClaimsLost) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "invokeari_peers_alive",
			Help: "Daemons (this one included) whose lease is held, as last seen."},
			status(func(st stasisapp.ClusterStatus) float64 { return float64(len(st.Peers)) })),
	)
}
