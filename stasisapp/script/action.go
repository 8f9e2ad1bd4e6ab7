// Package script runs the actions a call's webhook sends (SPEC §9) as a pure state
// machine: actions, webhook replies, ARI events and timer expiries go in; ARI commands,
// webhook requests and timers come out. It does no I/O, reads no clock and starts no
// goroutine; the App's runner executes what it returns and feeds back what happens.
package script

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Limits of a webhook document.
const (
	MaxActions   = 64
	MaxURLLen    = 2048
	MaxDigits    = 64
	MaxPauseSec  = 600
	MaxRecordSec = 3600
	MaxDialSec   = 300
	MaxGatherSec = 120
)

// Action is one step of a webhook document; exactly one of its fields is set.
type Action struct {
	Say      string    // digits spoken one by one
	Play     []string  // ARI media URIs, played in order
	Gather   *Gather   // collect DTMF
	Record   *Record   // record the caller
	Dial     *Dial     // call a second party and bridge it with this call
	Continue *Continue // hand the call to the dialplan
	Pause    float64   // seconds of silence (set when the action is pause)
	Redirect string    // fetch the next actions from this URL
	Hangup   bool      // hang up
	kind     string    // the action's key in the document
}

// Kind is the action's name as written in the document ("say", "gather", ...).
func (a Action) Kind() string { return a.kind }

// Gather collects DTMF digits, optionally while playing a prompt.
type Gather struct {
	Digits   int      `json:"digits"`    // stop after this many digits (0: no limit)
	FinishOn string   `json:"finish_on"` // a key that ends the input and is not part of it (default "#")
	Timeout  float64  `json:"timeout"`   // seconds without a key, counted after the prompt (default 5)
	Prompt   []string `json:"-"`         // media played while waiting; a key stops it
	Action   string   `json:"action"`    // URL that gets `gathered` (default: the call's webhook)
}

// Record records the caller into a live recording.
type Record struct {
	MaxSeconds int    `json:"max_seconds"` // default 60
	Beep       bool   `json:"beep"`
	FinishOn   string `json:"finish_on"` // "#", "*", "any" or "none" (default "#")
	Action     string `json:"action"`    // URL that gets `recorded` (default: the call's webhook)
}

// Dial calls a second party; once it answers both are bridged in a mixing bridge.
type Dial struct {
	D      string `json:"d"`      // endpoint, TECH/resource
	T      int    `json:"t"`      // ring timeout in seconds (default 30)
	I      string `json:"i"`      // caller id
	Action string `json:"action"` // URL that gets `dialed` (default: go on with the next action)
}

// Continue hands the call over to the dialplan.
type Continue struct {
	C string `json:"c"` // context (default: the request's c)
	E string `json:"e"` // extension (default "s")
}

// Document is a webhook's reply: {"actions":[…]}.
type Document struct {
	Actions []Action `json:"actions"`
}

// Parse reads a webhook reply. An empty body means no actions (the call is hung up).
// Anything else that is not a valid document is an error.
func Parse(body []byte) ([]Action, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var doc struct {
		Actions []json.RawMessage `json:"actions"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("invalid webhook document: %w", err)
	}
	if len(doc.Actions) > MaxActions {
		return nil, fmt.Errorf("invalid webhook document: %d actions (at most %d)", len(doc.Actions), MaxActions)
	}
	out := make([]Action, 0, len(doc.Actions))
	for i, raw := range doc.Actions {
		a, err := parseAction(raw)
		if err != nil {
			return nil, fmt.Errorf("invalid webhook document: action %d: %w", i, err)
		}
		out = append(out, a)
	}
	return out, nil
}

func parseAction(raw json.RawMessage) (Action, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return Action{}, err
	}
	if len(m) != 1 {
		return Action{}, fmt.Errorf("an action is an object with exactly one key, got %d", len(m))
	}
	var a Action
	for k, v := range m {
		a.kind = k
		if err := a.decode(k, v); err != nil {
			return Action{}, fmt.Errorf("%s: %w", k, err)
		}
	}
	return a, nil
}

func strict(v json.RawMessage, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
}

func (a *Action) decode(k string, v json.RawMessage) error {
	switch k {
	case "say":
		if err := json.Unmarshal(v, &a.Say); err != nil {
			return err
		}
		if a.Say == "" || len(a.Say) > MaxDigits || strings.Trim(a.Say, "0123456789*#") != "" {
			return fmt.Errorf("must be 1-%d of [0-9*#]", MaxDigits)
		}
	case "play":
		m, err := media(v)
		if err != nil {
			return err
		}
		a.Play = m
	case "gather":
		var g struct {
			Gather
			Prompt json.RawMessage `json:"prompt"`
		}
		g.Digits, g.FinishOn, g.Timeout = 0, "#", 5
		if err := strict(v, &g); err != nil {
			return err
		}
		if len(g.Prompt) > 0 && string(g.Prompt) != "null" {
			m, err := media(g.Prompt)
			if err != nil {
				return fmt.Errorf("prompt: %w", err)
			}
			g.Gather.Prompt = m
		}
		switch {
		case g.Digits < 0 || g.Digits > MaxDigits:
			return fmt.Errorf("digits must be 0-%d", MaxDigits)
		case len(g.FinishOn) > 1 || strings.Trim(g.FinishOn, "0123456789*#") != "":
			return errors.New(`finish_on must be one of 0-9 * # or ""`)
		case g.Timeout <= 0 || g.Timeout > MaxGatherSec:
			return fmt.Errorf("timeout must be in (0, %d] seconds", MaxGatherSec)
		}
		if err := checkURL(g.Action); err != nil {
			return fmt.Errorf("action: %w", err)
		}
		a.Gather = &g.Gather
	case "record":
		r := Record{MaxSeconds: 60, FinishOn: "#"}
		if err := strict(v, &r); err != nil {
			return err
		}
		switch {
		case r.MaxSeconds < 1 || r.MaxSeconds > MaxRecordSec:
			return fmt.Errorf("max_seconds must be 1-%d", MaxRecordSec)
		case r.FinishOn != "#" && r.FinishOn != "*" && r.FinishOn != "any" && r.FinishOn != "none":
			return errors.New(`finish_on must be "#", "*", "any" or "none"`)
		}
		if err := checkURL(r.Action); err != nil {
			return fmt.Errorf("action: %w", err)
		}
		a.Record = &r
	case "dial":
		d := Dial{T: 30}
		if err := strict(v, &d); err != nil {
			return err
		}
		tech, res, ok := strings.Cut(d.D, "/")
		switch {
		case !ok || tech == "" || res == "" || len(d.D) > 256 || strings.ContainsAny(d.D, " \t\r\n,"):
			return errors.New("d must be TECH/resource")
		case d.T < 1 || d.T > MaxDialSec:
			return fmt.Errorf("t must be 1-%d", MaxDialSec)
		case len(d.I) > 256:
			return errors.New("i is too long")
		}
		if err := checkURL(d.Action); err != nil {
			return fmt.Errorf("action: %w", err)
		}
		a.Dial = &d
	case "continue":
		var c Continue
		if err := strict(v, &c); err != nil {
			return err
		}
		for _, s := range []string{c.C, c.E} {
			if len(s) > 80 || strings.Trim(s, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz*#+_.!-") != "" {
				return errors.New("c and e must be 0-80 of [0-9A-Za-z*#+_.!-]")
			}
		}
		a.Continue = &c
	case "pause":
		if err := json.Unmarshal(v, &a.Pause); err != nil {
			return err
		}
		if a.Pause <= 0 || a.Pause > MaxPauseSec {
			return fmt.Errorf("must be in (0, %d] seconds", MaxPauseSec)
		}
	case "redirect":
		if err := json.Unmarshal(v, &a.Redirect); err != nil {
			return err
		}
		if a.Redirect == "" {
			return errors.New("needs a URL")
		}
		return checkURL(a.Redirect)
	case "hangup":
		var h struct{}
		if err := strict(v, &h); err != nil {
			return err
		}
		a.Hangup = true
	default:
		return errors.New("unknown action")
	}
	return nil
}

// media reads one media URI or a list of them.
func media(v json.RawMessage) ([]string, error) {
	var list []string
	if err := json.Unmarshal(v, &list); err != nil {
		var one string
		if err := json.Unmarshal(v, &one); err != nil {
			return nil, errors.New("must be a media URI or a list of them")
		}
		list = []string{one}
	}
	if len(list) == 0 || len(list) > 16 {
		return nil, errors.New("must name 1-16 media URIs")
	}
	for _, m := range list {
		scheme, rest, ok := strings.Cut(m, ":")
		if !ok || rest == "" || len(m) > 512 || strings.ContainsAny(m, ", \t\r\n") {
			return nil, fmt.Errorf("%q is not an ARI media URI (e.g. sound:hello-world)", m)
		}
		switch scheme {
		case "sound", "recording", "number", "digits", "characters", "tone":
		default:
			return nil, fmt.Errorf("%q: unknown media scheme %q", m, scheme)
		}
	}
	return list, nil
}

// CheckURL reports whether s is an absolute http(s) URL a webhook may have (the target
// policy, webhooks.allow, is the sender's business).
func CheckURL(s string) error {
	if s == "" {
		return errors.New("empty URL")
	}
	return checkURL(s)
}

func checkURL(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > MaxURLLen {
		return fmt.Errorf("URL longer than %d bytes", MaxURLLen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return errors.New("must be an absolute http(s) URL without credentials")
	}
	return nil
}
