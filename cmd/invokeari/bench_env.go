package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"
)

// benchEnv is a running bench setup: the simulator in its own process and the daemon
// in this process (runDaemon, the real wiring) with its embedded NATS.
type benchEnv struct {
	dir              string
	sim              *simProcess
	simUser, simPass string
	apiKey           string
	webhookSecret    string // the bench key's callback signing secret
	httpURL          string // http://127.0.0.1:port/v2/invokeARI
	natsURL          string // the daemon's embedded NATS
	d                *daemon
	cancel           context.CancelFunc
	done             chan error
}

// benchPassEnv is the (private, in-memory) environment variable the bench config names
// for the simulator's ARI password.
const benchPassEnv = "INVOKEARI_BENCH_ARI_PASSWORD"

// startBenchEnv starts the simulator process (exe bench -sim-child) and the daemon, and
// waits until the daemon's ARI link is up. Logs of both go to logs.
func startBenchEnv(ctx context.Context, exe, dir string, logs io.Writer) (_ *benchEnv, err error) {
	e := &benchEnv{dir: dir, simUser: "bench", simPass: randomHex(12), apiKey: "bench-" + randomHex(16),
		webhookSecret: randomHex(16), done: make(chan error, 1)}
	defer func() {
		if err != nil {
			e.stop()
		}
	}()
	if e.sim, err = startSimProcess(ctx, exe, e.simUser, e.simPass, logs); err != nil {
		return e, err
	}
	return e, e.startDaemon(ctx, logs, e.sim.url, e.simUser, e.simPass, nil)
}

// startDaemon starts the daemon in this process on the Asterisk at ariURL (the limits
// out of the way: max_in_flight 250000, no key rate) and waits until its ARI link is up.
// dial, when set, opens its ARI connections.
func (e *benchEnv) startDaemon(ctx context.Context, logs io.Writer, ariURL, user, pass string,
	dial func(ctx context.Context, network, address string) (net.Conn, error)) error {
	sum := sha256.Sum256([]byte(e.apiKey))
	cfg := fmt.Sprintf(`http: {listen: "127.0.0.1:0"}
asterisk:
  - name: bench
    url: %q
    username: %q
    password_env: %s
    app: invokeari-bench
nats: {embedded: {listen: "127.0.0.1:0", store_dir: %q}, stream_max_age: 1h}
keys:
  - name: bench
    sha256: %q
    webhooks: {allow: ["127.0.0.1"], secret_env: %s}
defaults: {timeout: 30s, wait: answer}
limits: {max_in_flight: 250000, drain_timeout: 10s}
log: {level: info}
`, ariURL, user, benchPassEnv, filepath.Join(e.dir, "nats"), hex.EncodeToString(sum[:]), benchWebhookSecretEnv)
	path := filepath.Join(e.dir, "invokeari-bench.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	dctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	started := make(chan string, 1)
	env := map[string]string{benchPassEnv: pass, benchWebhookSecretEnv: e.webhookSecret}
	go func() { // owned by benchEnv: ends when stop cancels dctx
		e.done <- runDaemon(dctx, serveOptions{configPath: path, out: logs, getenv: func(k string) string { return env[k] },
			ariDial: dial, started: func(addr string, d *daemon) { e.d = d; started <- addr }})
	}()
	select {
	case addr := <-started:
		e.httpURL = "http://" + addr + "/v2/invokeARI"
	case err := <-e.done:
		e.cancel = nil
		return fmt.Errorf("daemon stopped before it started: %w", err)
	case <-time.After(30 * time.Second):
		return errors.New("daemon did not start within 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
	if e.d.emb == nil {
		return errors.New("daemon did not start its embedded NATS")
	}
	e.natsURL = e.d.emb.ClientURL()
	if err := waitFor(ctx, 15*time.Second, func() bool {
		for _, l := range e.d.app.Status() {
			if !l.Connected {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("daemon's ARI link to %s: %w", ariURL, err)
	}
	return nil
}

// stop stops the daemon (it drains), then the simulator process.
func (e *benchEnv) stop() error {
	var err error
	if e.cancel != nil {
		e.cancel()
		e.cancel = nil
		select {
		case err = <-e.done:
		case <-time.After(60 * time.Second):
			err = errors.New("daemon did not stop within 60s")
		}
	}
	if e.sim != nil {
		e.sim.stop()
		e.sim = nil
	}
	return err
}

// waitFor polls cond until it holds, ctx ends or limit passes. Polling paces itself
// at 10 ms; it is for the bench's own set-up and settling, never inside a measurement.
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("condition not reached within %s", limit)
		case <-tick.C:
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b)
}
