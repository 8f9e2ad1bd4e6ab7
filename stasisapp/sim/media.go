package sim

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file serves what webhook-driven calls need (SPEC §9): playbacks, DTMF from a
// DTMF-sending far end, live recordings and mixing bridges, as Asterisk 22.10 showed
// them in testdata/ari/recordings/webhook (README there). Everything runs under s.mu.

// media is the simulator's playbacks, recordings and bridges, guarded by Server.mu.
type media struct {
	playbacks  map[string]*playback
	recordings map[string]*liveRecording
	bridges    map[string]*bridge
}

type playback struct {
	id, mediaURI string
	next         string // the second media URI of a list ("next_media_uri"), if any
	ch           *channel
	timer        *time.Timer
}

type liveRecording struct {
	name, format string
	ch           *channel
	timer        *time.Timer
}

type bridge struct {
	id, app, created string
	channels         []*channel
}

func newMedia() media {
	return media{playbacks: map[string]*playback{}, recordings: map[string]*liveRecording{}, bridges: map[string]*bridge{}}
}

// playFor is how long a media URI plays on the recorded Asterisk (English GSM prompts):
// about 0.95 s per spoken digit, 1.42 s for hello-world (2343 bytes of GSM), 1 s else.
func playFor(uri string) time.Duration {
	scheme, rest, _ := strings.Cut(uri, ":")
	switch {
	case scheme == "digits" || scheme == "characters":
		return time.Duration(len(rest)) * 950 * time.Millisecond
	case scheme == "sound" && strings.HasPrefix(rest, "digits/"):
		return 900 * time.Millisecond
	case uri == "sound:hello-world":
		return 1420 * time.Millisecond
	}
	return time.Second
}

// recordingTail is how long past maxDurationSeconds the recorded Asterisk took to end a
// recording of a silent channel (2 s max with beep: RecordingFinished after 4.5 s).
const recordingTail = 2500 * time.Millisecond

// dtmfDuration is the duration_ms Asterisk reported for a digit sent with SendDTMF
// through a Local channel.
const dtmfDuration = 100

// routeMedia serves the media and bridge resources; it reports whether it did. The
// handlers below run under s.mu, taken here.
func (s *Server) routeMedia(w http.ResponseWriter, r *http.Request, p []string) bool {
	m := r.Method
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(p) == 4 && p[0] == "channels" && p[2] == "play" && m == http.MethodPost:
		s.play(w, p[1], p[3], q.Get("media"))
	case len(p) == 2 && p[0] == "playbacks" && m == http.MethodDelete:
		s.stopPlayback(w, p[1])
	case len(p) == 3 && p[0] == "channels" && p[2] == "record" && m == http.MethodPost:
		s.record(w, p[1], q)
	case len(p) == 4 && p[0] == "recordings" && p[1] == "live" && p[3] == "stop" && m == http.MethodPost:
		s.stopRecording(w, p[2])
	case len(p) == 2 && p[0] == "bridges" && m == http.MethodPost:
		s.createBridge(w, p[1], q.Get("type"))
	case len(p) == 2 && p[0] == "bridges" && m == http.MethodDelete:
		s.destroyBridge(w, p[1])
	case len(p) == 3 && p[0] == "bridges" && p[2] == "addChannel" && m == http.MethodPost:
		s.addChannel(w, p[1], q.Get("channel"))
	default:
		return false
	}
	return true
}

// stasisChannel returns the channel id if it is in Stasis, else writes ARI's error.
func (s *Server) stasisChannel(w http.ResponseWriter, id string) *channel {
	ch := s.channels[id]
	switch {
	case ch == nil:
		writeMsg(w, http.StatusNotFound, "Channel not found")
		return nil
	case !ch.inStasis:
		writeMsg(w, http.StatusConflict, "Channel not in Stasis application")
		return nil
	}
	return ch
}

func (pb *playback) json(state string) string {
	b := []byte(`{"id":`)
	b = appendStr(b, pb.id)
	b = append(b, `,"media_uri":`...)
	b = appendStr(b, pb.mediaURI)
	if pb.next != "" {
		b = append(b, `,"next_media_uri":`...)
		b = appendStr(b, pb.next)
	}
	b = append(b, `,"target_uri":`...)
	b = appendStr(b, "channel:"+pb.ch.id)
	b = append(b, `,"language":"en","state":`...)
	b = appendStr(b, state)
	return string(append(b, '}'))
}

// objEvent emits a playback or recording event to the app of its channel.
func (s *Server) objEvent(ch *channel, typ, key, obj string) {
	e := newEv("").typ(typ).raw(key, obj)
	e.b = append(e.b, `,"asterisk_id":"`+asteriskID+`"`...)
	s.emit(ch, e)
}

func (s *Server) play(w http.ResponseWriter, chID, id, uris string) {
	ch := s.stasisChannel(w, chID)
	if ch == nil {
		return
	}
	if uris == "" {
		writeMsg(w, http.StatusBadRequest, "Missing parameter media")
		return
	}
	if s.media.playbacks[id] != nil {
		writeMsg(w, http.StatusConflict, "Playback with same ID already exists")
		return
	}
	list := strings.Split(uris, ",")
	pb := &playback{id: id, mediaURI: list[0], ch: ch}
	if len(list) > 1 {
		// A list plays as one playback; PlaybackContinuing between items is not simulated.
		pb.next = list[1]
	}
	s.media.playbacks[id] = pb
	writeJSON(w, http.StatusCreated, []byte(pb.json("queued")))
	s.objEvent(ch, "PlaybackStarted", "playback", pb.json("playing"))
	var d time.Duration
	for _, u := range list {
		d += playFor(u)
	}
	pb.timer = s.schedule(ch.call, d, func() { s.endPlayback(pb) })
}

// endPlayback reports a playback done (played out, or stopped: Asterisk 22 says "done"
// for both).
func (s *Server) endPlayback(pb *playback) {
	if s.media.playbacks[pb.id] != pb {
		return
	}
	delete(s.media.playbacks, pb.id)
	if pb.timer != nil {
		pb.timer.Stop()
	}
	s.objEvent(pb.ch, "PlaybackFinished", "playback", pb.json("done"))
}

func (s *Server) stopPlayback(w http.ResponseWriter, id string) {
	pb := s.media.playbacks[id]
	if pb == nil {
		writeMsg(w, http.StatusNotFound, "Playback not found")
		return
	}
	s.endPlayback(pb) // the recordings show PlaybackFinished before the 204
	w.WriteHeader(http.StatusNoContent)
}

func (rec *liveRecording) json(state string, duration bool) string {
	b := []byte(`{"name":`)
	b = appendStr(b, rec.name)
	b = append(b, `,"format":`...)
	b = appendStr(b, rec.format)
	b = append(b, `,"state":`...)
	b = appendStr(b, state)
	b = append(b, `,"target_uri":`...)
	b = appendStr(b, "channel:"+rec.ch.id)
	if duration {
		// The simulated far ends send no audio, like the kit's: Asterisk reports 0.
		b = append(b, `,"duration":0`...)
	}
	return string(append(b, '}'))
}

func (s *Server) record(w http.ResponseWriter, chID string, q map[string][]string) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	ch := s.stasisChannel(w, chID)
	if ch == nil {
		return
	}
	name, format := get("name"), get("format")
	if name == "" || format == "" {
		writeMsg(w, http.StatusBadRequest, "Missing parameter name or format")
		return
	}
	if old := s.media.recordings[name]; old != nil {
		if get("ifExists") != "overwrite" {
			writeMsg(w, http.StatusConflict, "Recording with same name already exists on the system")
			return
		}
		old.timer.Stop()
	}
	rec := &liveRecording{name: name, format: format, ch: ch}
	s.media.recordings[name] = rec
	writeJSON(w, http.StatusCreated, []byte(rec.json("queued", false)))
	s.objEvent(ch, "RecordingStarted", "recording", rec.json("recording", false))
	if maxSec, _ := strconv.Atoi(get("maxDurationSeconds")); maxSec > 0 {
		rec.timer = s.schedule(ch.call, time.Duration(maxSec)*time.Second+recordingTail, func() { s.endRecording(rec) })
	} else {
		rec.timer = time.NewTimer(time.Hour) // ends with the channel or a stop
		rec.timer.Stop()
	}
}

func (s *Server) endRecording(rec *liveRecording) {
	if s.media.recordings[rec.name] != rec {
		return
	}
	delete(s.media.recordings, rec.name)
	rec.timer.Stop()
	s.objEvent(rec.ch, "RecordingFinished", "recording", rec.json("done", true))
}

func (s *Server) stopRecording(w http.ResponseWriter, name string) {
	rec := s.media.recordings[name]
	if rec == nil {
		writeMsg(w, http.StatusNotFound, "Recording not found")
		return
	}
	s.endRecording(rec)
	w.WriteHeader(http.StatusNoContent)
}

func (b *bridge) json() string {
	out := []byte(`{"id":`)
	out = appendStr(out, b.id)
	out = append(out, `,"technology":"simple_bridge","bridge_type":"mixing","bridge_class":"stasis","creator":"Stasis","name":"","channels":[`...)
	for i, ch := range b.channels {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendStr(out, ch.id)
	}
	out = append(out, `],"creationtime":`...)
	out = appendStr(out, b.created)
	return string(append(out, `,"video_mode":"talker"}`...))
}

func (s *Server) createBridge(w http.ResponseWriter, id, typ string) {
	if typ != "" && typ != "mixing" {
		writeMsg(w, http.StatusBadRequest, "the simulator has mixing bridges only")
		return
	}
	if s.media.bridges[id] != nil {
		writeMsg(w, http.StatusConflict, "Bridge with same ID already exists")
		return
	}
	b := &bridge{id: id, created: nowStamp()}
	s.media.bridges[id] = b
	writeJSON(w, http.StatusOK, []byte(b.json()))
}

// bridgeEvent emits ChannelEnteredBridge / ChannelLeftBridge about ch.
func (s *Server) bridgeEvent(b *bridge, ch *channel, typ string) {
	e := newEv("").typ(typ).raw("bridge", b.json())
	s.emit(ch, e.chanObj("channel", ch))
}

func (s *Server) addChannel(w http.ResponseWriter, id, chans string) {
	b := s.media.bridges[id]
	if b == nil {
		writeMsg(w, http.StatusNotFound, "Bridge not found")
		return
	}
	var add []*channel
	for _, cid := range strings.Split(chans, ",") {
		ch := s.channels[cid]
		switch {
		case ch == nil:
			writeMsg(w, http.StatusBadRequest, "Channel not found")
			return
		case !ch.inStasis:
			writeMsg(w, http.StatusUnprocessableEntity, "Channel not in Stasis application")
			return
		case s.bridgeOf(ch) != nil:
			writeMsg(w, http.StatusConflict, "Channel is already bridged")
			return
		}
		add = append(add, ch)
	}
	for _, ch := range add {
		if b.app == "" {
			b.app = ch.app
		}
		b.channels = append(b.channels, ch)
		s.bridgeEvent(b, ch, "ChannelEnteredBridge")
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) bridgeOf(ch *channel) *bridge {
	for _, b := range s.media.bridges {
		for _, c := range b.channels {
			if c == ch {
				return b
			}
		}
	}
	return nil
}

func (b *bridge) remove(ch *channel) {
	for i, c := range b.channels {
		if c == ch {
			b.channels = append(b.channels[:i], b.channels[i+1:]...)
			return
		}
	}
}

func (s *Server) destroyBridge(w http.ResponseWriter, id string) {
	b := s.media.bridges[id]
	if b == nil {
		writeMsg(w, http.StatusNotFound, "Bridge not found")
		return
	}
	w.WriteHeader(http.StatusNoContent)
	for len(b.channels) > 0 {
		ch := b.channels[0]
		b.remove(ch)
		s.bridgeEvent(b, ch, "ChannelLeftBridge")
	}
	delete(s.media.bridges, id)
	if c := s.apps[b.app]; c != nil {
		e := newEv("").typ("BridgeDestroyed").raw("bridge", b.json())
		e.b = append(e.b, `,"asterisk_id":"`+asteriskID+`"`...)
		c.send(finish(e.b, b.app))
	}
}

// leaveMedia runs as ch leaves Stasis (hangup or continue): its recording ends
// (RecordingFinished comes before ChannelDestroyed), its playbacks stop without an
// event, and it leaves its bridge (ChannelLeftBridge before StasisEnd).
func (s *Server) leaveMedia(ch *channel) {
	for _, rec := range s.media.recordings {
		if rec.ch == ch {
			s.endRecording(rec)
		}
	}
	for id, pb := range s.media.playbacks {
		if pb.ch == ch {
			pb.timer.Stop()
			delete(s.media.playbacks, id)
		}
	}
	if b := s.bridgeOf(ch); b != nil {
		b.remove(ch)
		s.bridgeEvent(b, ch, "ChannelLeftBridge")
	}
}

// startDTMF makes an answered far end press its Behavior.DTMF keys, DTMFGap apart,
// starting DTMFAfter after the answer: our channel gets ChannelDtmfReceived.
func (s *Server) startDTMF(c *call) {
	keys := c.beh.DTMF
	if keys == "" {
		return
	}
	gap := c.beh.DTMFGap
	if gap <= 0 {
		gap = 250 * time.Millisecond
	}
	for i, k := range keys {
		digit := string(k)
		s.schedule(c, c.beh.DTMFAfter+time.Duration(i)*gap, func() {
			o := c.o
			if s.channels[o.id] != o {
				return
			}
			e := newEv("").typ("ChannelDtmfReceived").str("digit", digit).num("duration_ms", dtmfDuration)
			s.emit(o, e.chanObj("channel", o))
		})
	}
}
