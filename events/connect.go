package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Options are the credentials and TLS files the daemon uses for an external NATS.
// At most one of user/password, token, nkey seed file and creds file may be set.
type Options struct {
	Name         string // connection name shown by the server (default "invokeari")
	User         string
	Password     string
	Token        string
	NKeySeedFile string // file holding an nkey user seed
	CredsFile    string // JWT + seed .creds file (NGS / operator mode)
	TLSCAFile    string // CA bundle to trust for the server's certificate
	TLSCertFile  string // client certificate, with TLSKeyFile
	TLSKeyFile   string
	Logger       *slog.Logger // connection state changes (default: discard)
}

// NATSOptions turns o into nats.Options for Connect. It reads the nkey seed file,
// so a missing or bad file is reported here rather than at connect time.
func (o Options) NATSOptions() ([]nats.Option, error) {
	auth := 0
	for _, set := range []bool{o.User != "" || o.Password != "", o.Token != "", o.NKeySeedFile != "", o.CredsFile != ""} {
		if set {
			auth++
		}
	}
	if auth > 1 {
		return nil, errors.New("nats options: set only one of user/password, token, nkey seed file, creds file")
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return nil, errors.New("nats options: TLS cert and key files go together")
	}
	name := o.Name
	if name == "" {
		name = "invokeari"
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			log.Info("nats connection closed")
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats async error", "subject", subj, "err", err)
		}),
	}
	switch {
	case o.User != "" || o.Password != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	case o.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats options: nkey seed: %w", err)
		}
		opts = append(opts, opt)
	case o.CredsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(o.TLSCAFile))
	}
	if o.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(o.TLSCertFile, o.TLSKeyFile))
	}
	return opts, nil
}

// Connect dials NATS at url and waits until the first connection is up or ctx ends.
//
// The defaults are what the Publisher's never-drop guarantee relies on: reconnect
// forever (MaxReconnects(-1)) with a short jittered wait (ReconnectWait 250ms,
// ReconnectJitter 100ms/1s), keep retrying when the first dial fails
// (RetryOnFailedConnect), and buffer publishes while reconnecting (the default
// 8 MiB ReconnectBufSize). opts are applied after the defaults and may override them;
// pass Options.NATSOptions for credentials, TLS and logging.
func Connect(ctx context.Context, url string, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.Timeout(2 * time.Second),
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
	}, opts...)
	shown := redactURL(url)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", shown, err)
	}
	if nc.IsConnected() {
		return nc, nil
	}
	ch := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(ch)
	for !nc.IsConnected() {
		select {
		case <-ch:
			if nc.IsClosed() {
				return nil, fmt.Errorf("connect nats %s: %w", shown, nats.ErrConnectionClosed)
			}
		case <-ctx.Done():
			lastErr := nc.LastError()
			nc.Close()
			if lastErr != nil {
				return nil, fmt.Errorf("connect nats %s: %w (last error: %v)", shown, ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("connect nats %s: %w", shown, ctx.Err())
		}
	}
	return nc, nil
}

// redactURL hides credentials in a comma-separated list of NATS URLs, for errors.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("redacted") // a bare user part may be a token
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
