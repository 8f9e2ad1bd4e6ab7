package stasisapp

import (
	"context"
	"sync"

	"github.com/invokeari/invokeari/stasisapp/ari"
)

// A call adopted while still ringing was originated into the dead daemon's Stasis app:
// when the callee answers, Asterisk runs Stasis() for that app, and with nobody holding
// it the answered call fails (STASISSTATUS=FAILED) and is hung up. So the adopter holds
// the dead daemon's app name on that Asterisk too (a second websocket, the "proxy"),
// while it has calls adopted from it: the answered call enters Stasis there and is
// continued as its request asks. When the owner comes back and takes its app name
// again, the proxy gets ApplicationReplaced and lets go at once (it does not fight);
// the adopted calls go on through the channel subscriptions of the adopter's own app.

// proxyKey names a held app on one server.
type proxyKey struct{ server, app string }

type proxy struct {
	link *link
	stop context.CancelFunc
}

// proxies is the adopter's set of held apps; the zero value is ready.
type proxies struct {
	mu      sync.Mutex
	held    map[proxyKey]*proxy
	running sync.WaitGroup
}

// holdApp makes this daemon hold app on server while it has calls adopted from it.
func (a *App) holdApp(ctx context.Context, server, app string) {
	c := a.cfg.Cluster
	l := a.link(server)
	if c.Attach == nil || l == nil || app == l.AppName {
		return
	}
	ps := &a.cluster.proxies
	k := proxyKey{server, app}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.held[k] != nil {
		return
	}
	client, err := c.Attach(server, app)
	if err != nil {
		a.log.Warn("adopt: cannot hold the dead owner's app; an answer to its ringing calls will fail Stasis",
			"server", server, "app", app, "err", err)
		return
	}
	pl := &link{Server: Server{Name: server, AppName: app, ARI: client}}
	pl.setReason("not connected yet")
	pctx, stop := context.WithCancel(ctx)
	if ps.held == nil {
		ps.held = map[proxyKey]*proxy{}
	}
	ps.held[k] = &proxy{link: pl, stop: stop}
	a.log.Info("holding the dead owner's Stasis app for its adopted calls", "server", server, "app", app)
	ps.running.Add(1)
	go func() { // ends when pctx ends (released, replaced, or the App stops)
		defer ps.running.Done()
		defer stop()
		_ = client.Run(pctx, &proxyHandler{app: a, link: pl, stop: stop})
	}()
}

// releaseIdleApps lets go of held apps no adopted call in flight needs any more.
func (a *App) releaseIdleApps() {
	ps := &a.cluster.proxies
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.held) == 0 {
		return
	}
	a.mu.Lock()
	active := make([]*tracked, 0, len(a.active))
	for _, t := range a.active {
		active = append(active, t)
	}
	a.mu.Unlock()
	need := map[proxyKey]bool{}
	for _, t := range active { // t.mu after a.mu is released: the lock order is t.mu, then a.mu
		t.mu.Lock()
		if t.adoptedApp != "" {
			need[proxyKey{t.req.Server, t.adoptedApp}] = true
		}
		t.mu.Unlock()
	}
	for k, p := range ps.held {
		if !need[k] {
			a.log.Info("releasing the dead owner's Stasis app: no adopted call needs it", "server", k.server, "app", k.app)
			p.stop()
			delete(ps.held, k)
		}
	}
}

// stopProxies ends every held app and waits for them.
func (a *App) stopProxies() {
	ps := &a.cluster.proxies
	ps.mu.Lock()
	for k, p := range ps.held {
		p.stop()
		delete(ps.held, k)
	}
	ps.mu.Unlock()
	ps.running.Wait()
}

// proxyHandler routes a held app's events to the calls, like a link's, and lets go of
// the app when its owner takes it back.
type proxyHandler struct {
	app  *App
	link *link
	stop context.CancelFunc
}

func (h *proxyHandler) HandleEvent(ctx context.Context, ev ari.Event) {
	if _, ok := ev.(*ari.ApplicationReplaced); ok {
		h.app.log.Info("the dead owner's Stasis app is held by another connection again (its daemon is back?); letting it go",
			"server", h.link.Name, "app", h.link.AppName)
		h.stop()
		return
	}
	if h.app.waitResumed(ctx) {
		h.app.handleEvent(h.link, ev)
	}
}

func (h *proxyHandler) Connected(context.Context, bool) { h.link.connected.Store(true) }

func (h *proxyHandler) Disconnected(err error) {
	h.link.connected.Store(false)
	h.link.setReason("held app's websocket down: " + err.Error())
}
