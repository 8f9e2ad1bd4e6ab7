package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/invokeari/invokeari/bridge/api"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// Config is the daemon's whole configuration (configs/invokeari.example.yaml documents
// every field). Secrets are never inline: they come from the environment or a file.
type Config struct {
	HTTP     HTTPConfig       `yaml:"http"`
	Asterisk []AsteriskConfig `yaml:"asterisk"`
	NATS     NATSConfig       `yaml:"nats"`
	Keys     []api.Key        `yaml:"keys"`
	Defaults api.Defaults     `yaml:"defaults"`
	Limits   LimitsConfig     `yaml:"limits"`
	Log      LogConfig        `yaml:"log"`
	// DynamicServers (off by default) accepts allowed ARI URLs that are not configured,
	// with the request's own ariuser/aripass.
	DynamicServers api.DynamicServers `yaml:"dynamic_servers"`
	// Callbacks tunes the delivery of status callbacks (keys' webhooks).
	Callbacks CallbacksConfig `yaml:"callbacks"`
	// InstanceID names this daemon among several sharing a NATS cluster (default: the
	// host name and a suffix kept in instance_id_file). It derives the default Stasis app
	// name, the embedded NATS server name and the lease key.
	InstanceID string `yaml:"instance_id"`
	// InstanceIDFile keeps the derived instance id across restarts (default
	// <dir of nats.embedded.store_dir>/instance-id).
	InstanceIDFile string `yaml:"instance_id_file"`
	// Cluster shares calls between several daemons on one NATS (cluster).
	Cluster ClusterMode `yaml:"cluster"`
}

// CallbacksConfig tunes status callback delivery (SPEC §8). Zero values take the defaults.
type CallbacksConfig struct {
	// Disabled turns delivery off in this daemon. Per-call order needs one deliverer:
	// with several daemons on one NATS, leave it on in exactly one.
	Disabled    bool          `yaml:"disabled"`
	Workers     int           `yaml:"workers"`       // POSTs in flight at most (default 128)
	Timeout     time.Duration `yaml:"timeout"`       // per POST (default 5s)
	MinBackoff  time.Duration `yaml:"min_backoff"`   // first retry delay, doubling (default 1s)
	MaxBackoff  time.Duration `yaml:"max_backoff"`   // longest delay between tries (default 1h)
	GiveUpAfter time.Duration `yaml:"give_up_after"` // then published on invokeari.callbacks.failed (default 24h)
}

// ClusterMode turns on scale-out: call ids claimed across daemons (one dial per id) and
// a dead daemon's calls adopted by a survivor.
type ClusterMode struct {
	Enabled      bool    `yaml:"enabled"`
	AdoptRate    float64 `yaml:"adopt_rate"`    // adoptions started per second at most (default 50)
	AdoptWorkers int     `yaml:"adopt_workers"` // adoptions under way at most (default 8)
}

// HTTPConfig is the HTTP front door's listener.
type HTTPConfig struct {
	Listen  string `yaml:"listen"`   // default 127.0.0.1:8080
	TLSCert string `yaml:"tls_cert"` // optional PEM certificate file; with tls_key serves HTTPS
	TLSKey  string `yaml:"tls_key"`
}

// AsteriskConfig is one Asterisk to originate on.
type AsteriskConfig struct {
	Name         string  `yaml:"name"`
	URL          string  `yaml:"url"` // ARI base URL, http://host:8088/ari
	Username     string  `yaml:"username"`
	PasswordEnv  string  `yaml:"password_env"`  // environment variable holding the ARI password
	PasswordFile string  `yaml:"password_file"` // or a file holding it
	App          string  `yaml:"app"`           // Stasis app name, unique per daemon instance (default invokeari)
	CPS          float64 `yaml:"cps"`           // originates per second cap on this server (0 = none)
	// MaxConnections caps the daemon's REST connections to this Asterisk (default 32). Keep
	// it below http.conf sessionlimit (default 100), which the event websocket and every
	// other ARI/HTTP client of that Asterisk share: over the limit Asterisk closes new
	// connections unanswered.
	MaxConnections int `yaml:"max_connections"`

	password string // resolved by resolveSecrets; never logged
}

// NATSConfig selects an external NATS (URL set) or the embedded server.
type NATSConfig struct {
	URL          string         `yaml:"url"` // empty: run the embedded server
	User         string         `yaml:"user"`
	PasswordEnv  string         `yaml:"password_env"`
	TokenEnv     string         `yaml:"token_env"`
	NKeySeedFile string         `yaml:"nkey_seed_file"`
	CredsFile    string         `yaml:"creds_file"`
	TLS          TLSFiles       `yaml:"tls"`
	Embedded     EmbeddedConfig `yaml:"embedded"`
	StreamMaxAge time.Duration  `yaml:"stream_max_age"` // retention of INVOKEARI_CALLS (default 168h)
	// RequireKey makes invokeari.originate demand an X-API-Key header like HTTP does.
	RequireKey bool `yaml:"require_key"`
	// Replicas is how many servers of a NATS cluster keep the call stream and the
	// buckets (default 1; 3 on a cluster keeps them through the loss of one node).
	Replicas int `yaml:"replicas"`
}

// TLSFiles are PEM files for a TLS client connection.
type TLSFiles struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// EmbeddedConfig is the in-process nats-server.
type EmbeddedConfig struct {
	Listen   string `yaml:"listen"`    // default 127.0.0.1:4222
	StoreDir string `yaml:"store_dir"` // default ./data/nats
	// Cluster, when set, makes the embedded server a node of a NATS cluster (every
	// daemon of a three-machine deployment runs one node; no separate NATS install).
	Cluster *ClusterConfig `yaml:"cluster"`
}

// ClusterConfig is the embedded server's cluster membership.
type ClusterConfig struct {
	Name   string   `yaml:"name"`   // the cluster's name, the same on every node
	Listen string   `yaml:"listen"` // host:port for routes from the other nodes
	Routes []string `yaml:"routes"` // the nodes' route URLs, nats-route://host:port
}

// LimitsConfig holds global limits.
type LimitsConfig struct {
	MaxInFlight  int           `yaml:"max_in_flight"` // calls in flight over all keys (default 1000)
	DrainTimeout time.Duration `yaml:"drain_timeout"` // SIGTERM: how long in-flight calls may go on (default 60s)
	Technologies []string      `yaml:"technologies"`  // channel technologies allowed in d (default PJSIP, SIP, IAX2, Local, DAHDI)
}

// LogConfig selects log level and format.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default) or text
}

// loadConfig reads a YAML file; unknown keys are errors so typos do not go unnoticed.
func loadConfig(path string) (Config, error) {
	var c Config
	f, err := os.Open(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// applyDefaults fills what the config leaves out.
func (c *Config) applyDefaults() {
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:8080"
	}
	if c.NATS.Embedded.Listen == "" {
		c.NATS.Embedded.Listen = "127.0.0.1:4222"
	}
	if c.NATS.Embedded.StoreDir == "" {
		c.NATS.Embedded.StoreDir = "./data/nats"
	}
	if c.NATS.StreamMaxAge == 0 {
		c.NATS.StreamMaxAge = 168 * time.Hour
	}
	if c.Limits.DrainTimeout == 0 {
		c.Limits.DrainTimeout = 60 * time.Second
	}
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = 1
	}
	for i := range c.Asterisk {
		if c.Asterisk[i].App == "" {
			c.Asterisk[i].App = defaultApp(c.InstanceID)
		}
	}
	if c.Defaults.Server == "" && len(c.Asterisk) == 1 {
		c.Defaults.Server = c.Asterisk[0].Name
	}
}

// resolveSecrets reads ARI passwords from the environment or files. It is called from
// main only: packages never read the environment.
func (c *Config) resolveSecrets(getenv func(string) string) error {
	var errs []error
	for i := range c.Asterisk {
		a := &c.Asterisk[i]
		switch {
		case a.PasswordEnv != "" && a.PasswordFile != "":
			errs = append(errs, fmt.Errorf("asterisk[%d].password_env/password_file: set only one", i))
		case a.PasswordEnv != "":
			a.password = getenv(a.PasswordEnv)
			if a.password == "" {
				errs = append(errs, fmt.Errorf("asterisk[%d].password_env: environment variable %s is empty or unset", i, a.PasswordEnv))
			}
		case a.PasswordFile != "":
			b, err := os.ReadFile(a.PasswordFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("asterisk[%d].password_file: %w", i, err))
				continue
			}
			a.password = strings.TrimRight(string(b), "\r\n")
		default:
			errs = append(errs, fmt.Errorf("asterisk[%d]: password_env or password_file is required", i))
		}
	}
	for i := range c.Keys {
		w := &c.Keys[i].Webhooks
		switch {
		case w.SecretEnv != "" && w.SecretFile != "":
			// Validate names it.
		case w.SecretEnv != "":
			w.Secret = []byte(getenv(w.SecretEnv))
			if len(w.Secret) == 0 {
				errs = append(errs, fmt.Errorf("keys[%d].webhooks.secret_env: environment variable %s is empty or unset", i, w.SecretEnv))
			}
		case w.SecretFile != "":
			b, err := os.ReadFile(w.SecretFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("keys[%d].webhooks.secret_file: %w", i, err))
				continue
			}
			w.Secret = []byte(strings.TrimRight(string(b), "\r\n"))
			if len(w.Secret) == 0 {
				errs = append(errs, fmt.Errorf("keys[%d].webhooks.secret_file: %s is empty", i, w.SecretFile))
			}
		}
	}
	return errors.Join(errs...)
}

// dynamicApp is the Stasis app name used on dynamic servers: the default server's app,
// else the first server's.
func (c *Config) dynamicApp() string {
	for _, a := range c.Asterisk {
		if a.Name == c.Defaults.Server {
			return a.App
		}
	}
	if len(c.Asterisk) > 0 {
		return c.Asterisk[0].App
	}
	return "invokeari"
}

// policy is the front-door policy derived from the config.
func (c *Config) policy() api.Config {
	p := api.Config{Keys: c.Keys, Defaults: c.Defaults, MaxInFlight: c.Limits.MaxInFlight, Technologies: c.Limits.Technologies,
		DynamicServers: c.DynamicServers}
	for _, a := range c.Asterisk {
		p.Servers = append(p.Servers, api.Server{Name: a.Name, URL: a.URL, Username: a.Username, Password: a.password, CPS: a.CPS})
	}
	return p
}

// Validate checks the config; each error names its field.
func (c *Config) Validate() error {
	var errs []error
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		errs = append(errs, errors.New("http.tls_cert/http.tls_key: set both or neither"))
	}
	apps := map[string]bool{}
	for i, a := range c.Asterisk {
		if a.Name == "" {
			errs = append(errs, fmt.Errorf("asterisk[%d].name: required", i))
		}
		if !strings.HasPrefix(a.URL, "http://") && !strings.HasPrefix(a.URL, "https://") {
			errs = append(errs, fmt.Errorf("asterisk[%d].url: must be an http(s) ARI URL, got %q", i, a.URL))
		}
		if a.Username == "" {
			errs = append(errs, fmt.Errorf("asterisk[%d].username: required", i))
		}
		if a.MaxConnections < 0 || a.MaxConnections > 1000 {
			errs = append(errs, fmt.Errorf("asterisk[%d].max_connections: must be 0 (default %d) to 1000, and below Asterisk's http.conf sessionlimit", i, ari.DefaultMaxConns))
		}
		key := a.URL + "|" + a.App
		if apps[key] {
			errs = append(errs, fmt.Errorf("asterisk[%d].app: app %q used twice on the same Asterisk", i, a.App))
		}
		apps[key] = true
	}
	cb := c.Callbacks
	if cb.Workers < 0 || cb.Timeout < 0 || cb.MinBackoff < 0 || cb.MaxBackoff < 0 || cb.GiveUpAfter < 0 {
		errs = append(errs, errors.New("callbacks: workers, timeout, min_backoff, max_backoff and give_up_after must not be negative"))
	}
	if cb.MinBackoff > 0 && cb.MaxBackoff > 0 && cb.MinBackoff > cb.MaxBackoff {
		errs = append(errs, errors.New("callbacks.min_backoff: must not exceed max_backoff"))
	}
	if c.InstanceID != "" && !validInstanceID(c.InstanceID) {
		errs = append(errs, fmt.Errorf("instance_id: %q must be 1-64 of [A-Za-z0-9_-]", c.InstanceID))
	}
	if c.Cluster.AdoptRate < 0 || c.Cluster.AdoptWorkers < 0 {
		errs = append(errs, errors.New("cluster.adopt_rate/adopt_workers: must not be negative"))
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		errs = append(errs, fmt.Errorf("nats.replicas: %d is not 1 to 5", c.NATS.Replicas))
	}
	if cl := c.NATS.Embedded.Cluster; cl != nil {
		if c.NATS.URL != "" {
			errs = append(errs, errors.New("nats.embedded.cluster: set only without nats.url (the embedded server is not used then)"))
		}
		if cl.Name == "" || cl.Listen == "" || len(cl.Routes) == 0 {
			errs = append(errs, errors.New("nats.embedded.cluster: name, listen and routes are required"))
		}
	}
	if c.Limits.DrainTimeout < 0 {
		errs = append(errs, errors.New("limits.drain_timeout: must not be negative"))
	}
	switch strings.ToLower(c.Log.Level) {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "", "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not json or text", c.Log.Format))
	}
	if err := c.policy().Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
