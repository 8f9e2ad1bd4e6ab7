// Package netpolicy decides which hosts invokeari may contact on a request's behalf
// (dynamic ARI servers, webhooks and status callbacks): an allow-list of exact host names
// and IP/CIDRs, with the special ranges (loopback, link-local, unspecified, cloud
// metadata, multicast, broadcast) refused unless an entry lies inside that range itself.
// Nothing is resolved to decide; a dialer re-checks the resolved address (Control).
package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

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

// reHostName is a DNS host name whose last label starts with a letter (so it cannot be
// taken for an IP address by a lenient parser).
var reHostName = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Policy is a parsed allow-list. The nil Policy allows nothing. It is immutable and safe
// for concurrent use.
type Policy struct {
	prefixes []netip.Prefix
	hosts    map[string]bool // lower-case host names
}

// ParseEntry turns one allow entry into a prefix (an IP is a full-length prefix) or a
// lower-case host name.
func ParseEntry(s string) (netip.Prefix, string, error) {
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

// New parses entries; each error names the entry's index (`allow[2]: ...`).
func New(entries []string) (*Policy, error) {
	p := &Policy{hosts: make(map[string]bool)}
	var errs []error
	for i, e := range entries {
		pfx, host, err := ParseEntry(e)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("allow[%d]: %w", i, err))
		case host != "":
			p.hosts[host] = true
		default:
			p.prefixes = append(p.prefixes, pfx)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// Empty reports whether the policy allows nothing at all.
func (p *Policy) Empty() bool { return p == nil || len(p.prefixes) == 0 && len(p.hosts) == 0 }

// holds reports whether an entry that satisfies inside holds ip.
func (p *Policy) holds(ip netip.Addr, inside func(netip.Prefix) bool) bool {
	for _, a := range p.prefixes {
		if a.Contains(ip) && inside(a) {
			return true
		}
	}
	return false
}

// specialOK: for every special range holding ip, an allow entry inside it holds ip.
func (p *Policy) specialOK(ip netip.Addr) bool {
	for _, s := range specialRanges {
		if s.Contains(ip) && !p.holds(ip, func(a netip.Prefix) bool { return a.Bits() >= s.Bits() && s.Contains(a.Addr()) }) {
			return false
		}
	}
	return true
}

// AllowAddr reports whether ip may be contacted: some allow entry holds it and, for
// every special range holding it, an allow entry inside that range holds it.
func (p *Policy) AllowAddr(ip netip.Addr) bool {
	if p == nil || !ip.IsValid() || ip.Zone() != "" {
		return false
	}
	ip = ip.Unmap()
	return p.holds(ip, func(netip.Prefix) bool { return true }) && p.specialOK(ip)
}

// DialAllowed is for a dialer, after name resolution: an address in a special range
// (loopback, link-local, metadata, ...) is refused unless an allow entry inside that range
// holds it, so an allowed host name cannot resolve (or be rebound) to one. Other addresses
// pass: the host was vetted before the dial.
func (p *Policy) DialAllowed(ip netip.Addr) bool {
	if p == nil || !ip.IsValid() {
		return false
	}
	return p.specialOK(ip.WithZone("").Unmap())
}

// AllowHost reports whether a host name equals an allow entry (case-insensitively).
// Nothing is resolved.
func (p *Policy) AllowHost(host string) bool {
	return p != nil && p.hosts[strings.ToLower(host)]
}

// Control is a net.Dialer Control function: it refuses a resolved address that
// DialAllowed refuses.
func (p *Policy) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !p.DialAllowed(ap.Addr()) {
		return fmt.Errorf("address %s is not allowed", address)
	}
	return nil
}

// CheckHost vets the host (and port) of a parsed URL against the policy and returns its
// normalised form: lower-case name or canonical IP (IPv6 in brackets), then ":port" if
// one was given. The error says why in words fit for a client.
func (p *Policy) CheckHost(u *url.URL) (string, error) {
	host, port := u.Hostname(), u.Port()
	if strings.HasSuffix(u.Host, ":") {
		return "", errors.New("empty port")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return "", errors.New("bad port")
		}
	}
	const special = "address not in the allow list (loopback, link-local and metadata addresses must be listed explicitly)"
	if strings.HasPrefix(u.Host, "[") {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", errors.New("bad IPv6 literal")
		}
		if !p.AllowAddr(ip) {
			return "", errors.New(special)
		}
		host = "[" + ip.String() + "]"
	} else if ip, err := netip.ParseAddr(host); err == nil {
		if !p.AllowAddr(ip) {
			return "", errors.New(special)
		}
		host = ip.String()
	} else {
		host = strings.ToLower(host)
		if !reHostName.MatchString(host) || !p.AllowHost(host) {
			return "", errors.New("host name not in the allow list")
		}
	}
	if port != "" {
		host += ":" + port
	}
	return host, nil
}
