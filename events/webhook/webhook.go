// Package webhook signs, verifies and sends invokeari's outgoing HTTP callbacks: status
// callbacks (events/callbacks) and the webhooks that drive calls. It knows nothing of ARI.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/invokeari/invokeari/events/netpolicy"
)

// Header names of a signed callback.
const (
	SignatureHeader = "Invokeari-Signature"
	EventIDHeader   = "Invokeari-Event-Id"
)

// MaxURL is the longest callback or webhook URL accepted, in bytes.
const MaxURL = 2048

// DefaultMaxAge is how old a signature's t may be for a receiver (SPEC §8: 5 minutes).
const DefaultMaxAge = 5 * time.Minute

// Errors of Verify.
var (
	ErrMalformed = errors.New("malformed signature header")
	ErrStale     = errors.New("signature timestamp outside the allowed age")
	ErrMismatch  = errors.New("signature does not match")
)

// Sign returns the Invokeari-Signature header value
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks header against body; a t older than maxAge (or in the future beyond it)
// is refused. Several v1 values are accepted (any match passes), as during a secret
// rotation.
func Verify(secret []byte, header string, body []byte, now time.Time, maxAge time.Duration) error {
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrMalformed
		}
		switch k {
		case "t":
			if ts != "" {
				return ErrMalformed
			}
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return ErrMalformed
			}
			sigs = append(sigs, b)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrMalformed
	}
	age := now.Sub(time.Unix(sec, 0))
	if age > maxAge || age < -maxAge {
		return fmt.Errorf("%w: t is %s from now", ErrStale, age.Round(time.Second))
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrMismatch
}

// AllowList is a key's webhooks.allow: exact host names and IP/CIDRs, with SPEC §8's
// SSRF rules (loopback, link-local, unspecified, cloud metadata refused unless an entry
// lies inside that range itself). The nil AllowList allows nothing. It is immutable and
// safe for concurrent use.
type AllowList struct {
	p *netpolicy.Policy
}

// ParseAllowList parses a key's webhooks.allow entries.
func ParseAllowList(entries []string) (*AllowList, error) {
	p, err := netpolicy.New(entries)
	if err != nil {
		return nil, err
	}
	return &AllowList{p: p}, nil
}

// ErrNotAllowed wraps every refusal of AllowURL and of the Sender's dialer.
var ErrNotAllowed = errors.New("webhook URL not allowed")

// AllowURL is the admission check of a callback or webhook URL: absolute http(s), at
// most MaxURL bytes, no credentials or fragment, and a host the list allows. Nothing is
// resolved. Refusals wrap ErrNotAllowed and say why in words fit for a client.
func (a *AllowList) AllowURL(u string) error {
	deny := func(why string) error { return fmt.Errorf("%w: %s", ErrNotAllowed, why) }
	if len(u) > MaxURL {
		return deny(fmt.Sprintf("longer than %d bytes", MaxURL))
	}
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return deny("not a URL")
	case p.Scheme != "http" && p.Scheme != "https":
		return deny("scheme must be http or https")
	case p.Opaque != "" || p.Host == "":
		return deny("no host")
	case p.User != nil:
		return deny("credentials in the URL are not allowed")
	case p.Fragment != "" || strings.Contains(u, "#"):
		return deny("a fragment is not allowed")
	case strings.ContainsFunc(u, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return deny("spaces or control characters")
	}
	if a == nil || a.p.Empty() {
		return deny("this key has no webhooks.allow entries")
	}
	if _, err := a.p.CheckHost(p); err != nil {
		return deny(err.Error())
	}
	return nil
}
