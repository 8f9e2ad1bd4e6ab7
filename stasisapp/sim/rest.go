package sim

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxUniqueID is Asterisk's limit on a client-chosen channel id.
const maxUniqueID = 149

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (websocket hijack).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeMsg(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, append(appendStr([]byte(`{"message":`), msg), '}'))
}

func (s *Server) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		key := r.URL.Query().Get("api_key")
		if key == "" {
			return false
		}
		user, pass, ok = strings.Cut(key, ":")
		if !ok {
			return false
		}
	}
	u := subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.Username))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.Password))
	return u&p == 1
}

// ServeHTTP serves the ARI REST resources and the /ari/events websocket.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
	}
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		refuse(w)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		s.mu.Lock()
		s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(body), Status: sw.status})
		s.mu.Unlock()
	}()
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="Asterisk REST Interface"`)
		writeMsg(sw, http.StatusUnauthorized, "Authentication required")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/ari/")
	if !ok {
		writeMsg(sw, http.StatusNotFound, "Resource not found")
		return
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	for i, p := range parts {
		if u, err := url.PathUnescape(p); err == nil {
			parts[i] = u
		}
	}
	s.route(sw, r, parts, body)
}

// refuse closes the client's TCP connection without an answer: a stopped Asterisk.
func refuse(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeMsg(w, http.StatusServiceUnavailable, "Asterisk not booted")
		return
	}
	_ = conn.Close()
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeMsg(w, http.StatusMethodNotAllowed, "Invalid method")
}

func (s *Server) route(w *statusWriter, r *http.Request, p []string, body []byte) {
	m := r.Method
	switch {
	case len(p) == 1 && p[0] == "events":
		s.serveWS(w, r)
	case len(p) == 1 && p[0] == "channels":
		switch m {
		case http.MethodGet:
			s.listChannels(w)
		case http.MethodPost:
			s.originate(w, r, body, "", false)
		default:
			methodNotAllowed(w, "OPTIONS,GET,POST")
		}
	case len(p) == 2 && p[0] == "channels" && p[1] == "create":
		if m != http.MethodPost {
			methodNotAllowed(w, "OPTIONS,POST")
			return
		}
		s.originate(w, r, body, "", true)
	case len(p) == 2 && p[0] == "channels":
		switch m {
		case http.MethodGet:
			s.getChannel(w, p[1])
		case http.MethodPost:
			s.originate(w, r, body, p[1], false)
		case http.MethodDelete:
			s.deleteChannel(w, r, p[1])
		default:
			methodNotAllowed(w, "OPTIONS,GET,POST,DELETE")
		}
	case len(p) == 3 && p[0] == "channels" && p[2] == "continue" && m == http.MethodPost:
		s.continueChannel(w, r, p[1])
	case len(p) == 3 && p[0] == "channels" && p[2] == "dial" && m == http.MethodPost:
		s.dialChannel(w, r, p[1])
	case len(p) == 3 && p[0] == "channels" && p[2] == "variable" && m == http.MethodGet:
		s.getVariable(w, r, p[1])
	case len(p) == 1 && p[0] == "endpoints" && m == http.MethodGet:
		s.listEndpoints(w)
	case len(p) == 3 && p[0] == "endpoints" && m == http.MethodGet:
		s.getEndpoint(w, p[1], p[2])
	case len(p) == 1 && p[0] == "applications" && m == http.MethodGet:
		s.listApps(w)
	case len(p) == 2 && p[0] == "applications" && m == http.MethodGet:
		s.getApp(w, p[1])
	case len(p) == 3 && p[0] == "applications" && p[2] == "subscription" && (m == http.MethodPost || m == http.MethodDelete):
		s.subscription(w, r, p[1], m == http.MethodPost)
	case len(p) == 2 && p[0] == "asterisk" && p[1] == "info" && m == http.MethodGet:
		s.info(w, r)
	case len(p) == 2 && p[0] == "asterisk" && p[1] == "ping" && m == http.MethodGet:
		b := []byte(`{"ping":"pong","timestamp":`)
		b = appendStr(b, nowStamp())
		writeJSON(w, 200, append(b, `,"asterisk_id":"`+asteriskID+`"}`...))
	default:
		if !s.routeMedia(w, r, p) {
			writeMsg(w, http.StatusNotFound, "Resource not found")
		}
	}
}

// params merges the query string with top-level scalar fields of the JSON body.
type params struct {
	q    url.Values
	vars [][2]string
}

func (p params) get(k string) string { return p.q.Get(k) }

var errBody = fmt.Errorf("Error parsing request body")
var errVars = fmt.Errorf("Each value in 'variables' must be a string or an object with 'value' and optional 'report_events'")

func parseParams(r *http.Request, body []byte) (params, error) {
	p := params{q: r.URL.Query()}
	// Asterisk reads a body only when it is declared JSON (kit: without the header, or
	// with text/plain, the variables are silently dropped and invalid JSON is accepted).
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return p, nil
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return p, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return p, errBody
	}
	for k, v := range top {
		if k == "variables" {
			continue
		}
		var x any
		if json.Unmarshal(v, &x) != nil {
			continue
		}
		switch t := x.(type) {
		case string:
			p.q.Set(k, t)
		case float64:
			p.q.Set(k, strconv.FormatFloat(t, 'f', -1, 64))
		}
	}
	if raw, ok := top["variables"]; ok && len(raw) > 0 && raw[0] == '{' {
		vars, err := orderedVars(raw)
		if err != nil {
			return p, err
		}
		p.vars = vars
	}
	return p, nil
}

// orderedVars decodes {"NAME":"v"|{"value":"v"}} keeping the order sent.
func orderedVars(raw []byte) ([][2]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil, errBody
	}
	var out [][2]string
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, errBody
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, errBody
		}
		var str string
		if json.Unmarshal(v, &str) == nil {
			out = append(out, [2]string{kt.(string), str})
			continue
		}
		var obj struct {
			Value *string `json:"value"`
		}
		if json.Unmarshal(v, &obj) != nil || obj.Value == nil {
			return nil, errVars
		}
		out = append(out, [2]string{kt.(string), *obj.Value})
	}
	return out, nil
}

func parseCallerID(v string) (name, number string) {
	v = strings.TrimSpace(v)
	if i := strings.LastIndexByte(v, '<'); i >= 0 && strings.HasSuffix(v, ">") {
		return strings.Trim(strings.TrimSpace(v[:i]), `"`), v[i+1 : len(v)-1]
	}
	return "", v
}

var knownFormats = map[string]bool{"ulaw": true, "alaw": true, "gsm": true, "g722": true, "g729": true, "slin": true, "slin16": true, "opus": true}

func (s *Server) newID() string {
	s.uniq++
	return strconv.FormatInt(s.epoch, 10) + "." + strconv.FormatUint(s.uniq-1, 10)
}

// originate serves POST /channels, POST /channels/{id} (pathID) and POST /channels/create.
func (s *Server) originate(w http.ResponseWriter, r *http.Request, body []byte, pathID string, create bool) {
	p, err := parseParams(r, body)
	if err != nil {
		writeMsg(w, http.StatusBadRequest, err.Error())
		return
	}
	endpoint := p.get("endpoint")
	app, ext := p.get("app"), p.get("extension")
	id := p.get("channelId")
	if pathID != "" {
		id = pathID
	}
	other := p.get("otherChannelId")
	switch {
	case endpoint == "":
		writeMsg(w, http.StatusBadRequest, "Endpoint must be specified")
		return
	case !validEndpoint(endpoint):
		writeMsg(w, http.StatusBadRequest, "Invalid endpoint specified")
		return
	case !create && app == "" && ext == "":
		writeMsg(w, http.StatusBadRequest, "Application or extension must be specified")
		return
	case p.get("label") != "":
		writeMsg(w, http.StatusNotFound, "Requested label can not be found")
		return
	case p.get("originator") != "" && p.get("formats") != "":
		writeMsg(w, http.StatusBadRequest, "Originator and formats can't both be specified")
		return
	case len(id) > maxUniqueID || len(other) > maxUniqueID:
		writeMsg(w, http.StatusBadRequest, "Uniqueid length exceeds maximum of 149")
		return
	}
	if f := p.get("formats"); f != "" {
		for _, x := range strings.Split(f, ",") {
			if !knownFormats[x] {
				writeMsg(w, http.StatusBadRequest, "Provided format ("+x+") was not found")
				return
			}
		}
	}
	timeout := 30 * time.Second
	if t, err := strconv.Atoi(p.get("timeout")); err == nil {
		timeout = time.Duration(t) * time.Second
		if t <= 0 {
			timeout = 0
		}
	}
	if create {
		timeout = 0
	}

	s.mu.Lock()
	if o := p.get("originator"); o != "" && s.channels[o] == nil {
		s.mu.Unlock()
		writeMsg(w, http.StatusBadRequest, "Provided originator channel was not found")
		return
	}
	tech, res := splitEndpoint(endpoint)
	local := tech == "Local"
	if (id != "" && s.channels[id] != nil) || (local && other != "" && s.channels[other] != nil) ||
		(local && other == "" && id != "" && s.channels[id+";2"] != nil) {
		s.mu.Unlock()
		writeMsg(w, http.StatusConflict, "Channel with given unique ID already exists")
		return
	}
	beh, known := s.endpoints[endpoint]
	if !local && (tech != "PJSIP" || !known || beh.Result == Offline) {
		s.mu.Unlock()
		writeJSON(w, http.StatusInternalServerError, []byte(`{"error":"Allocation failed"}`))
		return
	}
	if local && !known {
		beh = Behavior{Result: LocalNonexistent}
	}
	c := &call{beh: beh, local: local, app: app, appArgs: p.get("appArgs"), ctx: p.get("context"), exten: ext, timeout: timeout}
	switch {
	case create:
		c.mode = modeCreate
	case app != "":
		c.mode = modeApp
	default:
		c.mode = modeDialplan
		if c.ctx == "" {
			c.ctx = "default"
		}
	}
	name, number := parseCallerID(p.get("callerId"))
	if id == "" {
		id = s.newID()
	}
	s.nameSeq++
	seq := fmt.Sprintf("%08x", s.nameSeq-1)
	created := nowStamp()
	o := &channel{call: c, id: id, state: "Down", callerName: name, callerNum: number, prio: 1, created: created, vars: p.vars}
	c.o = o
	if local {
		c.lexten, c.lctx, _ = strings.Cut(res, "@")
		if c.lctx == "" {
			c.lctx = "default"
		}
		c.dialstring = res
		o.name = "Local/" + res + "-" + seq + ";1"
		o.ctx, o.exten = c.lctx, c.lexten
		switch {
		case other != "":
		case p.get("channelId") != "" || pathID != "":
			// Asterisk names the ;2 half after a client-chosen id: "<id>;2".
			other = id + ";2"
		default:
			other = s.newID()
		}
		pc := &channel{call: c, id: other, name: "Local/" + res + "-" + seq + ";2", state: "Ring", callerName: name, callerNum: number,
			ctx: c.lctx, exten: c.lexten, prio: 1, created: created, vars: p.vars}
		c.p = pc
		s.channels[pc.id] = pc
	} else {
		c.dialstring = res
		o.name = "PJSIP/" + res + "-" + seq
		o.protocolID = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", s.epoch&0xffffffff, s.nameSeq&0xffff, s.uniq&0xfff, s.nameSeq&0xfff, s.uniq)
		o.ctx, o.exten = "from-sipp", "s"
	}
	if create {
		o.baseApp, o.baseData = "", ""
	} else {
		o.baseApp, o.baseData = "AppDial2", "(Outgoing Line)"
	}
	o.appName, o.appData = o.baseApp, o.baseData
	s.channels[id] = o
	s.originates++
	// An app originate or create subscribes the app to the channel (and the ;2 peer).
	if c.mode == modeApp {
		o.app = app
		if c.p != nil {
			c.p.app = app
		}
	} else if c.mode == modeCreate {
		o.app = app
	}
	reply := o.appendJSON(nil)
	if create {
		s.createdIntoStasis(c)
	} else {
		s.startDial(c)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, reply)
}

func validEndpoint(ep string) bool {
	tech, res, ok := strings.Cut(ep, "/")
	return ok && tech != "" && res != ""
}

// createdIntoStasis puts a /channels/create channel into Stasis at once (or fails it).
func (s *Server) createdIntoStasis(c *call) {
	o := c.o
	for _, kv := range o.vars {
		s.evVarset(o, kv[0], kv[1])
	}
	if c.app == "" || s.apps[c.app] == nil {
		s.evDestroyed(o, 0, 0)
		if c.p != nil {
			s.evDestroyed(c.p, 0, 0)
		}
		s.end(c)
		return
	}
	data := stasisData(c.app, c.appArgs)
	s.evDialplan(o, o.ctx, o.exten, 1, "Stasis", data)
	s.evVarset(o, "STASISSTATUS", "")
	s.evStasisStart(o, splitArgs(c.appArgs))
}

func (s *Server) listChannels(w http.ResponseWriter) {
	s.mu.Lock()
	b := []byte{'['}
	for i, ch := range s.sortedChannels() {
		if i > 0 {
			b = append(b, ',')
		}
		b = ch.appendJSON(b)
	}
	s.mu.Unlock()
	writeJSON(w, 200, append(b, ']'))
}

func (s *Server) getChannel(w http.ResponseWriter, id string) {
	s.mu.Lock()
	ch := s.channels[id]
	var b []byte
	if ch != nil {
		b = ch.appendJSON(nil)
	}
	s.mu.Unlock()
	if ch == nil {
		writeMsg(w, http.StatusNotFound, "Channel not found")
		return
	}
	writeJSON(w, 200, b)
}

func (s *Server) getVariable(w http.ResponseWriter, r *http.Request, id string) {
	name := r.URL.Query().Get("variable")
	s.mu.Lock()
	ch := s.channels[id]
	var v string
	var ok bool
	if ch != nil {
		v, ok = ch.getVar(name)
	}
	s.mu.Unlock()
	switch {
	case ch == nil:
		writeMsg(w, http.StatusNotFound, "Provided channel was not found")
	case name == "":
		writeMsg(w, http.StatusBadRequest, "Variable name is required")
	case !ok:
		writeMsg(w, http.StatusNotFound, "Provided variable was not found")
	default:
		writeJSON(w, 200, append(appendStr([]byte(`{"value":`), v), '}'))
	}
}

func (s *Server) deleteChannel(w http.ResponseWriter, r *http.Request, id string) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[id]
	if ch == nil {
		writeMsg(w, http.StatusNotFound, "Channel not found")
		return
	}
	cause, status := 16, "NOANSWER"
	if reason := q.Get("reason"); reason != "" {
		h, ok := hangupReasons[reason]
		if !ok {
			writeMsg(w, http.StatusBadRequest, "Invalid reason for hangup reason provided")
			return
		}
		cause, status = h.cause, h.status
	} else if rc := q.Get("reason_code"); rc != "" {
		n, err := strconv.Atoi(rc)
		if err != nil {
			writeMsg(w, http.StatusBadRequest, "Invalid reason for hangup reason provided")
			return
		}
		cause = n
	}
	s.hangupRequest(ch, cause, status)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) continueChannel(w http.ResponseWriter, r *http.Request, id string) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[id]
	switch {
	case ch == nil:
		writeMsg(w, http.StatusNotFound, "Channel not found")
		return
	case !ch.inStasis:
		writeMsg(w, http.StatusConflict, "Channel not in Stasis application")
		return
	}
	ctx, ext := q.Get("context"), q.Get("extension")
	if ctx == "" {
		ctx = ch.ctx
	}
	if ext == "" {
		ext = ch.exten
	}
	w.WriteHeader(http.StatusNoContent)
	s.evStasisEnd(ch)
	s.runDialplan(ch.call, ctx, ext)
}

func (s *Server) dialChannel(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[id]
	switch {
	case ch == nil:
		writeMsg(w, http.StatusNotFound, "Channel not found")
		return
	case !ch.inStasis:
		writeMsg(w, http.StatusConflict, "Channel not in Stasis application")
		return
	case ch.call.dialed || ch.call.mode != modeCreate:
		writeMsg(w, http.StatusConflict, "Channel is not in the 'Down' state")
		return
	}
	if t, err := strconv.Atoi(r.URL.Query().Get("timeout")); err == nil && t > 0 {
		ch.call.timeout = time.Duration(t) * time.Second
	}
	w.WriteHeader(http.StatusNoContent)
	s.startDial(ch.call)
}

func appendEndpoint(b []byte, res string, b2 Behavior) []byte {
	state := "online"
	if b2.Result == Offline {
		state = "offline"
	}
	b = append(b, `{"technology":"PJSIP","resource":`...)
	b = appendStr(b, res)
	b = append(b, `,"state":`...)
	b = appendStr(b, state)
	return append(b, `,"channel_ids":[]}`...)
}

func (s *Server) listEndpoints(w http.ResponseWriter) {
	s.mu.Lock()
	b := []byte{'['}
	n := 0
	for name, beh := range s.endpoints {
		tech, res := splitEndpoint(name)
		if tech != "PJSIP" {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendEndpoint(b, res, beh)
	}
	s.mu.Unlock()
	writeJSON(w, 200, append(b, ']'))
}

func (s *Server) getEndpoint(w http.ResponseWriter, tech, res string) {
	s.mu.Lock()
	beh, ok := s.endpoints[tech+"/"+res]
	s.mu.Unlock()
	if !ok || tech != "PJSIP" {
		writeMsg(w, http.StatusNotFound, "Endpoint not found")
		return
	}
	writeJSON(w, 200, appendEndpoint(nil, res, beh))
}

// appKnown: an app exists while its websocket is connected or channels are in it.
func (s *Server) appKnown(app string) bool {
	if s.apps[app] != nil {
		return true
	}
	for _, ch := range s.channels {
		if ch.inStasis && ch.call.app == app {
			return true
		}
	}
	return false
}

// allTopics is the Application object's subscriptions while its websocket has
// subscribeAll=true: the "all" topics replace every explicit subscription.
const allTopics = `,"channel_ids":["__AST_CHANNEL_ALL_TOPIC"],"bridge_ids":["__AST_BRIDGE_ALL_TOPIC"],` +
	`"endpoint_ids":["__AST_ENDPOINT_ALL_TOPIC"],"device_names":["__AST_DEVICE_STATE_ALL_TOPIC"],` +
	`"events_allowed":[],"events_disallowed":[]}`

func (s *Server) appendApp(b []byte, app string) []byte {
	b = append(b, `{"name":`...)
	b = appendStr(b, app)
	if c := s.apps[app]; c != nil && c.all {
		return append(b, allTopics...)
	}
	b = append(b, `,"channel_ids":[`...)
	n := 0
	for _, ch := range s.sortedChannels() {
		if ch.app != app {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendStr(b, ch.id)
	}
	return append(b, `],"bridge_ids":[],"endpoint_ids":[],"device_names":[],"events_allowed":[],"events_disallowed":[]}`...)
}

func (s *Server) listApps(w http.ResponseWriter) {
	s.mu.Lock()
	names := map[string]bool{}
	for a := range s.apps {
		names[a] = true
	}
	for _, ch := range s.channels {
		if ch.inStasis {
			names[ch.call.app] = true
		}
	}
	b := []byte{'['}
	n := 0
	for a := range names {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = s.appendApp(b, a)
	}
	s.mu.Unlock()
	writeJSON(w, 200, append(b, ']'))
}

func (s *Server) getApp(w http.ResponseWriter, app string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.appKnown(app) {
		writeMsg(w, http.StatusNotFound, "Application not found")
		return
	}
	writeJSON(w, 200, s.appendApp(nil, app))
}

func (s *Server) subscription(w http.ResponseWriter, r *http.Request, app string, subscribe bool) {
	src := r.URL.Query().Get("eventSource")
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.appKnown(app) {
		writeMsg(w, http.StatusNotFound, "Application not found")
		return
	}
	if src == "" {
		writeMsg(w, http.StatusBadRequest, "Missing parameter eventSource")
		return
	}
	var targets []*channel
	for _, one := range strings.Split(src, ",") {
		scheme, id, _ := strings.Cut(one, ":")
		switch scheme {
		case "channel":
		case "bridge", "endpoint", "deviceState":
			writeMsg(w, http.StatusUnprocessableEntity, "Event source does not exist")
			return
		default:
			writeMsg(w, http.StatusBadRequest, "Invalid event source URI scheme")
			return
		}
		ch := s.channels[id]
		if ch == nil {
			if subscribe {
				writeMsg(w, http.StatusUnprocessableEntity, "Event source does not exist")
			} else {
				writeMsg(w, http.StatusUnprocessableEntity, "Event source was not subscribed to")
			}
			return
		}
		if !subscribe && ch.app != app {
			writeMsg(w, http.StatusUnprocessableEntity, "Event source was not subscribed to")
			return
		}
		targets = append(targets, ch)
	}
	for _, ch := range targets {
		if subscribe {
			ch.app = app
		} else {
			ch.app = ""
		}
	}
	writeJSON(w, 200, s.appendApp(nil, app))
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	start := s.startup.Format("2006-01-02T15:04:05.000-0700")
	s.mu.Unlock()
	parts := map[string]string{
		"build":  `{"os":"Linux","kernel":"6.18.44","machine":"x86_64","options":"OPTIONAL_API","date":"2026-11-26 07:44:21 UTC","user":"root"}`,
		"system": `{"version":"22.10.1","entity_id":"` + asteriskID + `"}`,
		"config": `{"name":"","default_language":"en","setid":{"user":"","group":""},"max_open_files":65536}`,
		"status": `{"startup_time":"` + start + `","last_reload_time":"` + start + `"}`,
	}
	order := []string{"build", "system", "config", "status"}
	if only := r.URL.Query().Get("only"); only != "" {
		order = strings.Split(only, ",")
	}
	b := []byte{'{'}
	n := 0
	for _, k := range order {
		v, ok := parts[k]
		if !ok {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendStr(b, k)
		b = append(b, ':')
		b = append(b, v...)
	}
	writeJSON(w, 200, append(b, '}'))
}

// Hijack hands the connection to the websocket upgrader.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("sim: response writer cannot hijack")
	}
	w.status = http.StatusSwitchingProtocols
	return h.Hijack()
}
