package ari

import (
	"context"
	"net/http"
	"strconv"
	"strings"
)

// Playback is ARI's Playback model.
type Playback struct {
	ID        string `json:"id"`
	MediaURI  string `json:"media_uri"`
	TargetURI string `json:"target_uri"` // e.g. channel:{id}
	State     string `json:"state"`      // queued, playing, done, failed, ...
}

// LiveRecording is ARI's LiveRecording model.
type LiveRecording struct {
	Name            string `json:"name"`
	Format          string `json:"format"`
	TargetURI       string `json:"target_uri"`
	State           string `json:"state"`
	Duration        int    `json:"duration,omitempty"`         // seconds
	TalkingDuration int    `json:"talking_duration,omitempty"` // seconds
	SilenceDuration int    `json:"silence_duration,omitempty"` // seconds
	Cause           string `json:"cause,omitempty"`            // why it failed
}

// Bridge is ARI's Bridge model.
type Bridge struct {
	ID         string   `json:"id"`
	Technology string   `json:"technology"`
	BridgeType string   `json:"bridge_type"`
	Channels   []string `json:"channels"`
}

// PlaybackStarted is sent when a playback begins.
type PlaybackStarted struct {
	Base
	Playback Playback `json:"playback"`
}

// PlaybackFinished is sent when a playback ends (done, stopped, or failed).
type PlaybackFinished struct {
	Base
	Playback Playback `json:"playback"`
}

// ChannelDtmfReceived is sent for each DTMF digit a channel receives.
type ChannelDtmfReceived struct {
	channelBase
	Digit      string `json:"digit"`
	DurationMS int    `json:"duration_ms"`
}

// RecordingStarted is sent when a live recording begins.
type RecordingStarted struct {
	Base
	Recording LiveRecording `json:"recording"`
}

// RecordingFinished is sent when a live recording ends.
type RecordingFinished struct {
	Base
	Recording LiveRecording `json:"recording"`
}

// RecordingFailed is sent when a live recording fails.
type RecordingFailed struct {
	Base
	Recording LiveRecording `json:"recording"`
}

// mediaEvent returns an empty event of the media/bridge types this file models, or nil.
func mediaEvent(typ string) Event {
	switch typ {
	case "PlaybackStarted":
		return &PlaybackStarted{}
	case "PlaybackFinished":
		return &PlaybackFinished{}
	case "ChannelDtmfReceived":
		return &ChannelDtmfReceived{}
	case "RecordingStarted":
		return &RecordingStarted{}
	case "RecordingFinished":
		return &RecordingFinished{}
	case "RecordingFailed":
		return &RecordingFailed{}
	}
	return nil
}

// Play starts playing media (one URI or several, in order) on a channel
// (POST /channels/{id}/play/{playbackId}).
func (c *Client) Play(ctx context.Context, channelID, playbackID string, media []string) (Playback, error) {
	var pb Playback
	err := c.do(ctx, http.MethodPost, path("channels", channelID, "play", playbackID),
		query("media", strings.Join(media, ",")), nil, &pb)
	return pb, err
}

// StopPlayback stops a playback (DELETE /playbacks/{id}).
func (c *Client) StopPlayback(ctx context.Context, playbackID string) error {
	return c.do(ctx, http.MethodDelete, path("playbacks", playbackID), "", nil, nil)
}

// RecordParams are the parameters of POST /channels/{id}/record.
type RecordParams struct {
	Name        string
	Format      string // default wav
	MaxSeconds  int
	Beep        bool
	TerminateOn string // none, any, *, #
}

// Record starts a live recording of a channel (POST /channels/{id}/record); an
// existing recording of that name is overwritten.
func (c *Client) Record(ctx context.Context, channelID string, p RecordParams) (LiveRecording, error) {
	if p.Format == "" {
		p.Format = "wav"
	}
	var rec LiveRecording
	err := c.do(ctx, http.MethodPost, path("channels", channelID, "record"), query(
		"name", p.Name, "format", p.Format, "maxDurationSeconds", itoa(p.MaxSeconds),
		"beep", strconv.FormatBool(p.Beep), "terminateOn", p.TerminateOn, "ifExists", "overwrite"), nil, &rec)
	return rec, err
}

// StopRecording stops and stores a live recording (POST /recordings/live/{name}/stop).
func (c *Client) StopRecording(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodPost, path("recordings", "live", name, "stop"), "", nil, nil)
}

// CreateBridge creates a bridge with the given id (POST /bridges/{id}); typ is e.g. "mixing".
func (c *Client) CreateBridge(ctx context.Context, bridgeID, typ string) (Bridge, error) {
	var b Bridge
	err := c.do(ctx, http.MethodPost, path("bridges", bridgeID), query("type", typ), nil, &b)
	return b, err
}

// AddChannel adds channels to a bridge (POST /bridges/{id}/addChannel).
func (c *Client) AddChannel(ctx context.Context, bridgeID string, channelIDs ...string) error {
	return c.do(ctx, http.MethodPost, path("bridges", bridgeID, "addChannel"),
		query("channel", strings.Join(channelIDs, ",")), nil, nil)
}

// DestroyBridge shuts a bridge down (DELETE /bridges/{id}); channels in it stay in Stasis.
func (c *Client) DestroyBridge(ctx context.Context, bridgeID string) error {
	return c.do(ctx, http.MethodDelete, path("bridges", bridgeID), "", nil, nil)
}
