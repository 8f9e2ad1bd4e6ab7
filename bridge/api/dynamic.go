package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/invokeari/invokeari/events/netpolicy"
	"github.com/invokeari/invokeari/stasisapp"
)

// DynamicServers is the opt-in (off by default) acceptance of an ARI URL in a request
// that is not a configured server. Only http(s)://host[:port]/ari URLs whose host is an
// allowed IP or exactly an allowed host name are used, with the request's own
// ariuser/aripass; DNS is never resolved to decide.
type DynamicServers struct {
	Enabled bool `yaml:"enabled"`
	// Allow lists IPs, CIDRs (`10.0.0.0/8`) and exact host names (`pbx.example.com`).
	// Loopback, link-local, unspecified, multicast and cloud metadata addresses are
	// only allowed by an entry inside that special range itself: 0.0.0.0/0 does not
	// unlock 127.0.0.1, 127.0.0.1/32 does.
	Allow []string `yaml:"allow"`
	// IdleTimeout closes a dynamic server's ARI websocket after this long without
	// calls; 0 means DefaultDynamicIdleTimeout.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// DefaultDynamicIdleTimeout is DynamicServers.IdleTimeout when it is 0.
const DefaultDynamicIdleTimeout = 5 * time.Minute

// DynamicPolicy decides which hosts a dynamic server may have. The zero value (and a
// disabled config) allows nothing.
type DynamicPolicy struct {
	enabled bool
	policy  *netpolicy.Policy
}

func (d DynamicServers) validate(bad func(field, format string, args ...any)) {
	for i, a := range d.Allow {
		if _, _, err := netpolicy.ParseEntry(a); err != nil {
			bad(fmt.Sprintf("dynamic_servers.allow[%d]", i), "%v", err)
		}
	}
	if d.IdleTimeout < 0 {
		bad("dynamic_servers.idle_timeout", "must not be negative")
	}
	if d.Enabled && len(d.Allow) == 0 {
		bad("dynamic_servers.allow", "enabled with an empty allow list would allow nothing")
	}
}

// NewDynamicPolicy builds the policy of a validated config.
func NewDynamicPolicy(d DynamicServers) (*DynamicPolicy, error) {
	var errs []error
	d.validate(func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	pol, err := netpolicy.New(d.Allow)
	if err != nil {
		return nil, err
	}
	return &DynamicPolicy{enabled: d.Enabled, policy: pol}, nil
}

// Enabled reports whether dynamic servers are accepted at all.
func (p *DynamicPolicy) Enabled() bool { return p != nil && p.enabled }

// AllowAddr reports whether a dynamic server may be at ip (netpolicy.Policy.AllowAddr).
func (p *DynamicPolicy) AllowAddr(ip netip.Addr) bool {
	return p.Enabled() && p.policy.AllowAddr(ip)
}

// DialAllowed is for the dialer of dynamic servers, after name resolution
// (netpolicy.Policy.DialAllowed): no special address unless listed inside its range.
func (p *DynamicPolicy) DialAllowed(ip netip.Addr) bool {
	return p.Enabled() && p.policy.DialAllowed(ip)
}

// AllowHost reports whether a host name is allowed: it equals an allow entry
// (case-insensitively). Nothing is resolved.
func (p *DynamicPolicy) AllowHost(host string) bool {
	return p.Enabled() && p.policy.AllowHost(host)
}

// Check vets a request's ARI URL and returns its normalised form
// (scheme://host[:port]/ari). Any refusal is 403 server_not_allowed on field ari.
func (p *DynamicPolicy) Check(raw string) (string, *Error) {
	deny := func(why string) (string, *Error) {
		return "", forbidden(CodeServerDenied, "ari", "that ARI URL is not a configured server and not an allowed dynamic server: %s", why)
	}
	if !p.Enabled() {
		return deny("dynamic servers are disabled")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return deny("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return deny("scheme must be http or https")
	case u.Opaque != "" || u.Host == "":
		return deny("no host")
	case u.User != nil:
		return deny("credentials in the URL are not allowed (use ariuser/aripass)")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(raw, "?#"):
		return deny("a query or fragment is not allowed")
	case u.EscapedPath() != "/ari" && u.EscapedPath() != "/ari/":
		return deny("the path must be /ari")
	}
	host, err := p.policy.CheckHost(u)
	if err != nil {
		return deny(err.Error())
	}
	return u.Scheme + "://" + host + "/ari", nil
}

// dynamicServer selects a dynamic server for ref (a URL that is not configured).
func (g *Gate) dynamicServer(k *keyPolicy, ref, user, pass string) (*stasisapp.DynamicServer, *Error) {
	if len(k.Servers) > 0 {
		return nil, forbidden(CodeServerDenied, "ari", "this key may only use its listed servers")
	}
	u, e := g.dynamic.Check(ref)
	if e != nil {
		return nil, e
	}
	switch {
	case user == "":
		return nil, newError(http.StatusBadRequest, CodeMissingField, "ariuser", "ariuser is required for a dynamic ARI server")
	case pass == "":
		return nil, newError(http.StatusBadRequest, CodeMissingField, "aripass", "aripass is required for a dynamic ARI server")
	}
	return &stasisapp.DynamicServer{URL: u, Username: user, Password: pass}, nil
}
