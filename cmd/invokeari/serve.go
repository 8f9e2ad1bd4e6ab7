package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/bridge/api"
	"github.com/invokeari/invokeari/bridge/httpdoor"
	"github.com/invokeari/invokeari/bridge/natsdoor"
	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/callbacks"
	"github.com/invokeari/invokeari/events/natsrv"
	"github.com/invokeari/invokeari/events/webhook"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// serve runs the daemon until ctx ends, then shuts down in order: doors stop accepting,
// calls in flight get until the drain deadline, the ARI websockets close, the event
// outbox is flushed, NATS drains and the embedded server stops.
func serve(ctx context.Context, args []string, out io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	configPath := fs.String("config", getenv("INVOKEARI_CONFIG"), "YAML config file (env INVOKEARI_CONFIG); none: demo mode")
	listen := fs.String("listen", "", "HTTP listen address (env INVOKEARI_HTTP_LISTEN; overrides http.listen)")
	natsURL := fs.String("nats-url", "", "external NATS URL (env INVOKEARI_NATS_URL; overrides nats.url)")
	natsListen := fs.String("nats-listen", "", "embedded NATS listen address (env INVOKEARI_NATS_LISTEN)")
	storeDir := fs.String("store-dir", "", "embedded NATS store dir (env INVOKEARI_NATS_STORE_DIR)")
	simListen := fs.String("sim-listen", orDefault(getenv("INVOKEARI_SIM_LISTEN"), "127.0.0.1:8088"), "demo mode: simulator listen address (env INVOKEARI_SIM_LISTEN)")
	instanceID := fs.String("instance-id", "", "this daemon's instance id (env INVOKEARI_INSTANCE_ID; overrides instance_id)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return runDaemon(ctx, serveOptions{configPath: *configPath, listen: *listen, natsURL: *natsURL,
		natsListen: *natsListen, storeDir: *storeDir, simListen: *simListen, instanceID: *instanceID, out: out, getenv: getenv})
}

// serveOptions are serve's inputs; started, when set, is told the HTTP address once the
// daemon accepts requests (tests use it instead of fixed ports).
type serveOptions struct {
	configPath, listen, natsURL, natsListen, storeDir, simListen string
	instanceID                                                   string
	out                                                          io.Writer
	getenv                                                       func(string) string
	started                                                      func(httpAddr string, d *daemon)
	// ariDial, when set, opens the configured servers' ARI connections (the bench times
	// them on the wire with it).
	ariDial func(ctx context.Context, network, address string) (net.Conn, error)
}

func runDaemon(ctx context.Context, o serveOptions) error {
	getenv, out := o.getenv, o.out
	var cfg Config
	if o.configPath != "" {
		c, err := loadConfig(o.configPath)
		if err != nil {
			return err
		}
		cfg = c
	}
	// Environment overrides, then flags (flags win).
	override(&cfg.HTTP.Listen, getenv("INVOKEARI_HTTP_LISTEN"), o.listen)
	override(&cfg.NATS.URL, getenv("INVOKEARI_NATS_URL"), o.natsURL)
	override(&cfg.NATS.Embedded.Listen, getenv("INVOKEARI_NATS_LISTEN"), o.natsListen)
	override(&cfg.NATS.Embedded.StoreDir, getenv("INVOKEARI_NATS_STORE_DIR"), o.storeDir)
	override(&cfg.Log.Level, getenv("INVOKEARI_LOG_LEVEL"), "")
	override(&cfg.InstanceID, getenv("INVOKEARI_INSTANCE_ID"), o.instanceID)

	log := newLogger(out, cfg.Log)
	d := &daemon{log: log, started: o.started, ariDial: o.ariDial}
	defer d.close()

	demo := len(cfg.Asterisk) == 0
	if demo {
		if err := d.startDemo(ctx, &cfg, o.simListen); err != nil {
			return err
		}
		base := getenv
		getenv = func(k string) string { // the demo ARI password is public
			if k == demoPassEnv {
				return demoARIPass
			}
			return base(k)
		}
	}
	if err := cfg.resolveInstanceID(os.Hostname); err != nil {
		return err
	}
	cfg.applyDefaults()
	if err := cfg.resolveSecrets(getenv); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	return d.run(ctx, cfg, demo, getenv)
}

func override(dst *string, env, flagValue string) {
	if env != "" {
		*dst = env
	}
	if flagValue != "" {
		*dst = flagValue
	}
}

func newLogger(w io.Writer, c LogConfig) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(strings.ToUpper(orDefault(c.Level, "info"))))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// callStoreTTL bounds how long an in-flight record may stay in the call registry:
// longer than any call.
const callStoreTTL = 24 * time.Hour

// daemon holds what serve started, for ordered shutdown.
type daemon struct {
	log     *slog.Logger
	sim     *sim.Server
	emb     *natsrv.Embedded
	nc      *nats.Conn
	app     *stasisapp.App
	closers []func()
	started func(httpAddr string, d *daemon)
	ariDial func(ctx context.Context, network, address string) (net.Conn, error) // serveOptions.ariDial
	// sender signs and sends outgoing POSTs (status callbacks, webhooks); callbacks
	// delivers status callbacks (nil when disabled).
	sender    *webhook.Sender
	callbacks *callbacks.Deliverer
}

func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// Demo mode: the fixed try-it-now setup of the README.
const (
	demoKey     = "demo"
	demoServer  = "demo"
	demoARIUser = "invokeari"
	demoARIPass = "demo-secret"
	demoPassEnv = "INVOKEARI_DEMO_ARI_PASSWORD"
	// demoWebhookSecret signs the demo key's callbacks (to 127.0.0.1 only); public like
	// the demo ARI password.
	demoWebhookSecret = "demo-webhook-secret"
	demoWebhookAllow  = "127.0.0.1" // the demo key's webhooks.allow
	demoAppName       = "invokeari"
	demoRingTime      = time.Second
)

// DemoEndpoints are the simulated phones of demo mode.
func DemoEndpoints() map[string]sim.Behavior {
	return map[string]sim.Behavior{
		"PJSIP/6001": {Result: sim.Answer, RingAfter: 50 * time.Millisecond, AnswerAfter: demoRingTime, HangupAfter: 3 * time.Second},
		"PJSIP/6002": {Result: sim.Busy},
		"PJSIP/6003": {Result: sim.RingForever, RingAfter: 50 * time.Millisecond},
		"PJSIP/6004": {Result: sim.Decline, RingAfter: 50 * time.Millisecond, RingFor: demoRingTime},
		"PJSIP/6005": {Result: sim.Offline},
		"PJSIP/6006": {Result: sim.Congestion},
		// A phone for webhook-driven calls (README's "press 1 to confirm" webhook): answers,
		// presses 1 a second later.
		"PJSIP/6007": {Result: sim.Answer, RingAfter: 50 * time.Millisecond, AnswerAfter: demoRingTime,
			HangupAfter: 20 * time.Second, DTMF: "1", DTMFAfter: time.Second},
	}
}

// DemoContexts are the dialplan contexts the demo simulator knows.
func DemoContexts() map[string][]string {
	return map[string][]string{"confirmcode": {"s"}, "from-internal": {"100", "s"}}
}

func (d *daemon) startDemo(ctx context.Context, cfg *Config, listen string) error {
	s := sim.New(sim.Config{
		Addr:      listen,
		Username:  demoARIUser,
		Password:  demoARIPass,
		Endpoints: DemoEndpoints(),
		Contexts:  DemoContexts(),
		BootDelay: time.Second,
		Logger:    d.log.With("component", "simulator"),
	})
	if err := s.Start(ctx); err != nil {
		return fmt.Errorf("start simulator: %w", err)
	}
	d.sim = s
	d.closers = append(d.closers, func() { _ = s.Close() })
	d.log.Warn("DEMO MODE: no Asterisk configured — using the built-in Asterisk SIMULATOR, not a real PBX",
		"ari_url", s.URL(), "api_key", demoKey, "server", demoServer,
		"webhooks_allow", demoWebhookAllow, "webhook_secret", demoWebhookSecret,
		"endpoints", "PJSIP/6001 answers, 6002 busy, 6003 rings, 6004 declines, 6005 offline, 6006 congestion, 6007 answers and presses 1")
	sum := sha256.Sum256([]byte(demoKey))
	cfg.Asterisk = []AsteriskConfig{{Name: demoServer, URL: s.URL(), Username: demoARIUser, PasswordEnv: demoPassEnv, App: demoAppName}}
	cfg.Keys = []api.Key{{Name: "demo", SHA256: hex.EncodeToString(sum[:]),
		// The demo key may call back a receiver on this machine, and nothing else.
		Webhooks: api.Webhooks{Allow: []string{demoWebhookAllow}, Secret: []byte(demoWebhookSecret)}}}
	if cfg.Defaults.Server == "" {
		cfg.Defaults.Server = demoServer
	}
	return nil
}

func (d *daemon) run(ctx context.Context, cfg Config, demo bool, getenv func(string) string) error {
	log := d.log
	// NATS: embedded unless a URL is configured.
	url := cfg.NATS.URL
	if url == "" {
		emb, err := natsrv.Start(ctx, embeddedConfig(cfg, log))
		if err != nil {
			return fmt.Errorf("embedded NATS: %w", err)
		}
		d.emb = emb
		d.closers = append(d.closers, emb.Shutdown)
		url = emb.ClientURL()
		log.Info("embedded NATS running", "url", url, "store_dir", cfg.NATS.Embedded.StoreDir)
	}
	nopts, err := d.natsOptions(cfg, getenv)
	if err != nil {
		return err
	}
	nc, err := events.Connect(ctx, url, nopts...)
	if err != nil {
		return fmt.Errorf("connect NATS: %w", err)
	}
	d.nc = nc
	d.closers = append(d.closers, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := ensureStream(ctx, js, cfg); err != nil {
		return fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	lease, err := openLease(ctx, js, cfg, log)
	if err != nil {
		return err
	}
	store, err := openRegistry(ctx, js, cfg, log)
	if err != nil {
		return err
	}
	// Once, after an upgrade from a daemon that kept every call in a KV bucket: its calls
	// in flight move into the registry (this start reads that whole bucket).
	mctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	moved, err := store.MigrateLegacy(mctx)
	cancel()
	if err != nil {
		return fmt.Errorf("move calls from %s to the call registry: %w", events.LegacyCallBucket, err)
	}
	if moved > 0 {
		log.Info("calls in flight moved to the call registry", "from", events.LegacyCallBucket, "calls", moved)
	}
	pub := events.NewPublisher(js, events.PublisherConfig{Logger: log.With("component", "publisher"),
		Stored: store.EventStored})

	// Asterisk links.
	var servers []stasisapp.Server
	var clients []*ari.Client
	for _, a := range cfg.Asterisk {
		c, err := ari.NewClient(ari.Config{URL: a.URL, Username: a.Username, Password: a.password, App: a.App,
			MaxConns: a.MaxConnections, Dial: d.ariDial, Logger: log.With("component", "ari", "server", a.Name)})
		if err != nil {
			return fmt.Errorf("asterisk %s: %w", a.Name, err)
		}
		clients = append(clients, c)
		servers = append(servers, stasisapp.Server{Name: a.Name, AppName: a.App, ARI: c})
	}
	m := newMetrics()
	gate, err := api.NewGate(cfg.policy())
	if err != nil {
		return err
	}
	// Signed outgoing POSTs under each key's webhooks policy: status callbacks and the
	// webhooks of webhook-driven calls.
	d.sender = webhook.NewSender(webhook.SenderConfig{Secret: gate.WebhookSecret, Allow: gate.WebhookAllow,
		Timeout: cfg.Callbacks.Timeout, Logger: log.With("component", "webhook")})
	var dynamic *stasisapp.DynamicConfig
	if cfg.DynamicServers.Enabled {
		dynamic, err = dynamicServers(cfg, log)
		if err != nil {
			return err
		}
	}
	cluster, err := clusterConfig(ctx, js, cfg, lease, store, log)
	if err != nil {
		return err
	}
	app, err := stasisapp.New(stasisapp.Config{Servers: servers, Publisher: pub, Store: store,
		Logger: log.With("component", "stasisapp"), Hooks: m.hooks(), Dynamic: dynamic, Webhooks: d.sender, Cluster: cluster})
	if err != nil {
		return err
	}
	ready := &readiness{app: app, nc: nc, demo: demo, lease: lease}
	m.register(app, pub, clients)
	if !cfg.Callbacks.Disabled {
		cb := cfg.Callbacks
		d.callbacks = callbacks.New(callbacks.Config{JS: js, Sender: d.sender, Workers: cb.Workers,
			MinBackoff: cb.MinBackoff, MaxBackoff: cb.MaxBackoff, GiveUpAfter: cb.GiveUpAfter,
			AckWait: max(callbacks.DefaultAckWait, 3*cb.Timeout), Hooks: m.callbackHooks(),
			Logger: log.With("component", "callbacks")})
		m.registerCallbacks(d.callbacks)
	}
	m.registerLease(lease)
	m.registerCluster(app)

	// Background services, each with its own context so shutdown can go in order.
	var wg sync.WaitGroup
	errc := make(chan error, 5)
	start := func(name string, f func(context.Context) error, c context.Context) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(c); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer stopPub()
	appCtx, stopApp := context.WithCancel(context.Background())
	defer stopApp()
	cbCtx, stopCallbacks := context.WithCancel(context.Background())
	defer stopCallbacks()
	leaseCtx, stopLease := context.WithCancel(context.Background())
	defer stopLease()
	start("publisher", pub.Run, pubCtx)
	start("lease", lease.Run, leaseCtx)
	start("registry", store.Run, pubCtx)
	start("stasisapp", app.Run, appCtx)
	if d.callbacks != nil {
		// Off the originate path: it reads the stream the publisher writes.
		start("callbacks", d.callbacks.Run, cbCtx)
	}

	// Front doors.
	doorCtx, stopDoors := context.WithCancel(ctx)
	defer stopDoors()
	h := httpdoor.New(httpdoor.Config{Originator: app, Calls: app, Gate: gate, Readiness: ready, Metrics: m.handler(),
		Observe: m.observeReply("http"), Logger: log.With("component", "http")})
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	srv := httpdoor.NewServer(cfg.HTTP.Listen, h)
	listenFn := func() error { return srv.Serve(ln) }
	if cfg.HTTP.TLSCert != "" {
		listenFn = func() error { return srv.ServeTLS(ln, cfg.HTTP.TLSCert, cfg.HTTP.TLSKey) }
	}
	var doors sync.WaitGroup
	doors.Add(1)
	go func() {
		defer doors.Done()
		if err := httpdoor.Serve(doorCtx, srv, listenFn, 5*time.Second); err != nil {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	nd := natsdoor.New(natsdoor.Config{Conn: nc, Originator: app, Calls: app, Gate: gate, RequireKey: cfg.NATS.RequireKey,
		Observe: m.observeReply("nats"), Logger: log.With("component", "natsdoor")})
	doors.Add(1)
	go func() {
		defer doors.Done()
		if err := nd.Run(doorCtx); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("nats door: %w", err)
		}
	}()
	d.app = app
	if d.started != nil {
		d.started(ln.Addr().String(), d)
	}
	log.Info("invokeari ready to serve", "http", "http://"+ln.Addr().String()+"/v2/invokeARI", "nats", url,
		"originate_subject", natsdoor.Subject, "demo", demo, "instance_id", cfg.InstanceID)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping: doors closed, draining calls in flight", "drain_timeout", cfg.Limits.DrainTimeout)
	case runErr = <-errc:
		log.Error("stopping after a failure", "err", runErr)
	}
	// The doors stop taking requests while the calls in flight drain; replies still
	// waiting get the outcome if it comes within the doors' grace.
	stopDoors()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		dctx, cancel := context.WithTimeout(context.Background(), cfg.Limits.DrainTimeout)
		defer cancel()
		app.Drain(dctx, 5*time.Second)
	}()
	doors.Wait()
	<-drained
	stopApp()
	fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := pub.Flush(fctx); err != nil {
		log.Error("event outbox not flushed", "left", pub.Depth(), "err", err)
	}
	cancel()
	stopPub()
	stopCallbacks() // what it has not delivered stays in the stream and KV for the next start
	stopLease()     // released last: until now a peer must not adopt our calls
	wg.Wait()
	if err := nc.Drain(); err != nil {
		log.Warn("NATS drain", "err", err)
	}
	log.Info("stopped")
	return runErr
}

func (d *daemon) natsOptions(cfg Config, getenv func(string) string) ([]nats.Option, error) {
	o := events.Options{
		Name: "invokeari", User: cfg.NATS.User, NKeySeedFile: cfg.NATS.NKeySeedFile, CredsFile: cfg.NATS.CredsFile,
		TLSCAFile: cfg.NATS.TLS.CA, TLSCertFile: cfg.NATS.TLS.Cert, TLSKeyFile: cfg.NATS.TLS.Key,
		Logger: d.log.With("component", "nats"),
	}
	if cfg.NATS.PasswordEnv != "" {
		o.Password = getenv(cfg.NATS.PasswordEnv)
	}
	if cfg.NATS.TokenEnv != "" {
		o.Token = getenv(cfg.NATS.TokenEnv)
	}
	return o.NATSOptions()
}

// readiness reports /readyz: every Asterisk link and NATS.
type readiness struct {
	app   *stasisapp.App
	nc    *nats.Conn
	demo  bool
	lease *events.Lease
}

func (r *readiness) Ready() (bool, any) {
	links := r.app.Status()
	ok := r.nc.IsConnected()
	for _, l := range links {
		ok = ok && (l.Connected || l.Dynamic) // a request's own Asterisk is not ours to be ready on
	}
	natsState := map[string]any{"connected": r.nc.IsConnected(), "status": r.nc.Status().String()}
	detail := map[string]any{"asterisk": links, "nats": natsState}
	if r.lease != nil {
		detail["instance_id"] = r.lease.Instance()
		detail["lease"] = r.lease.State()
	}
	if st, ok := r.app.ClusterStatus(); ok {
		detail["cluster"] = st
	}
	if r.demo {
		detail["simulator"] = "DEMO MODE: Asterisk is the built-in simulator, not a real PBX"
	}
	return ok, detail
}

var _ http.Handler = (*httpdoor.Handler)(nil)

// dynamicServers wires the opt-in dynamic_servers: ARI clients for request-named
// Asterisks whose dialer (REST and websocket) refuses special addresses an allowed host
// name might resolve to, uses no proxy, follows no redirect and times out quickly.
func dynamicServers(cfg Config, log *slog.Logger) (*stasisapp.DynamicConfig, error) {
	policy, err := api.NewDynamicPolicy(cfg.DynamicServers)
	if err != nil {
		return nil, fmt.Errorf("dynamic_servers: %w", err)
	}
	idle := cfg.DynamicServers.IdleTimeout
	if idle == 0 {
		idle = api.DefaultDynamicIdleTimeout
	}
	dialer := &net.Dialer{Timeout: 3 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !policy.DialAllowed(ap.Addr()) {
			return fmt.Errorf("dynamic ARI server: address %s is not allowed", address)
		}
		return nil
	}}
	connect := func(ds stasisapp.DynamicServer) (stasisapp.Asterisk, error) {
		tr := &http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			TLSHandshakeTimeout:   3 * time.Second,
			ResponseHeaderTimeout: 5 * time.Second,
			MaxConnsPerHost:       ari.DefaultMaxConns,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       min(idle, ari.DefaultIdleConnTimeout),
		}
		hc := &http.Client{Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		name := stasisapp.DynamicServerName(ds.URL)
		return ari.NewClient(ari.Config{URL: ds.URL, Username: ds.Username, Password: ds.Password,
			App: cfg.dynamicApp(), HTTPClient: hc, RequestTimeout: 5 * time.Second,
			Logger: log.With("component", "ari", "server", name)})
	}
	return &stasisapp.DynamicConfig{AppName: cfg.dynamicApp(), Connect: connect, IdleTimeout: idle}, nil
}
