package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

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

// specialRanges are refused unless an allow entry lies inside the range itself.
var specialRanges = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),        // loopback
	netip.MustParsePrefix("::1/128"),            // loopback
	netip.MustParsePrefix("169.254.0.0/16"),     // link-local
	netip.MustParsePrefix("fe80::/10"),          // link-local
	netip.MustParsePrefix("0.0.0.0/8"),          // unspecified, "this network"
	netip.MustParsePrefix("::/128"),             // unspecified
	netip.MustParsePrefix("169.254.169.254/32"), // cloud metadata (AWS, GCP, Azure, ...)
	netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS metadata over IPv6
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata
	netip.MustParsePrefix("224.0.0.0/4"),        // multicast
	netip.MustParsePrefix("ff00::/8"),           // multicast
	netip.MustParsePrefix("255.255.255.255/32"), // broadcast
}

// DynamicPolicy decides which hosts a dynamic server may have. The zero value (and a
// disabled config) allows nothing.
type DynamicPolicy struct {
	enabled  bool
	prefixes []netip.Prefix
	hosts    map[string]bool // lower-case host names
}

var reHostName = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)

// parseAllow turns one allow entry into a prefix or a host name.
func parseAllow(s string) (netip.Prefix, string, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p != p.Masked() {
			return netip.Prefix{}, "", fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
		}
		return unmapPrefix(p), "", nil
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		if ip.Zone() != "" {
			return netip.Prefix{}, "", fmt.Errorf("%q: zoned addresses are not allowed", s)
		}
		ip = ip.Unmap()
		return netip.PrefixFrom(ip, ip.BitLen()), "", nil
	}
	h := strings.ToLower(s)
	if len(h) > 253 || !reHostName.MatchString(h) {
		return netip.Prefix{}, "", fmt.Errorf("%q is not an IP, CIDR or host name (whose last label starts with a letter)", s)
	}
	return netip.Prefix{}, h, nil
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

func (d DynamicServers) validate(bad func(field, format string, args ...any)) {
	for i, a := range d.Allow {
		if _, _, err := parseAllow(a); err != nil {
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
	p := &DynamicPolicy{enabled: d.Enabled, hosts: make(map[string]bool)}
	for _, a := range d.Allow {
		pfx, host, _ := parseAllow(a)
		if host != "" {
			p.hosts[host] = true
		} else {
			p.prefixes = append(p.prefixes, pfx)
		}
	}
	return p, nil
}

// Enabled reports whether dynamic servers are accepted at all.
func (p *DynamicPolicy) Enabled() bool { return p != nil && p.enabled }

// AllowAddr reports whether a dynamic server may be at ip: some allow entry holds it
// and, for every special range holding it, an allow entry inside that range holds it.
// The daemon's dialer also applies it to the addresses an allowed host name resolves to.
func (p *DynamicPolicy) AllowAddr(ip netip.Addr) bool {
	if !p.Enabled() || !ip.IsValid() || ip.Zone() != "" {
		return false
	}
	ip = ip.Unmap()
	holds := func(inside func(netip.Prefix) bool) bool {
		for _, a := range p.prefixes {
			if a.Contains(ip) && inside(a) {
				return true
			}
		}
		return false
	}
	return holds(func(netip.Prefix) bool { return true }) && p.specialOK(ip, holds)
}

// specialOK: for every special range holding ip, an allow entry inside it holds ip.
func (p *DynamicPolicy) specialOK(ip netip.Addr, holds func(inside func(netip.Prefix) bool) bool) bool {
	for _, s := range specialRanges {
		if s.Contains(ip) && !holds(func(a netip.Prefix) bool { return a.Bits() >= s.Bits() && s.Contains(a.Addr()) }) {
			return false
		}
	}
	return true
}

// DialAllowed is for the dialer of dynamic servers, after name resolution: an address
// in a special range (loopback, link-local, metadata, ...) is refused unless an allow
// entry inside that range holds it, so an allowed host name cannot resolve (or be
// rebound) to one. Other addresses pass: the host was vetted by Check.
func (p *DynamicPolicy) DialAllowed(ip netip.Addr) bool {
	if !p.Enabled() || !ip.IsValid() {
		return false
	}
	ip = ip.WithZone("").Unmap()
	return p.specialOK(ip, func(inside func(netip.Prefix) bool) bool {
		for _, a := range p.prefixes {
			if a.Contains(ip) && inside(a) {
				return true
			}
		}
		return false
	})
}

// AllowHost reports whether a host name is allowed: it equals an allow entry
// (case-insensitively). Nothing is resolved.
func (p *DynamicPolicy) AllowHost(host string) bool {
	return p.Enabled() && p.hosts[strings.ToLower(host)]
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
	host, port := u.Hostname(), u.Port()
	if strings.HasSuffix(u.Host, ":") {
		return deny("empty port")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return deny("bad port")
		}
	}
	if strings.HasPrefix(u.Host, "[") {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return deny("bad IPv6 literal")
		}
		if !p.AllowAddr(ip) {
			return deny("address not in the allow list (loopback, link-local and metadata addresses must be listed explicitly)")
		}
		host = "[" + ip.String() + "]"
	} else if ip, err := netip.ParseAddr(host); err == nil {
		if !p.AllowAddr(ip) {
			return deny("address not in the allow list (loopback, link-local and metadata addresses must be listed explicitly)")
		}
		host = ip.String()
	} else {
		host = strings.ToLower(host)
		if !reHostName.MatchString(host) || !p.AllowHost(host) {
			return deny("host name not in the allow list")
		}
	}
	if port != "" {
		host += ":" + port
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
