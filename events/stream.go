package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamName is the JetStream stream that keeps every call event (SPEC §3).
const StreamName = "INVOKEARI_CALLS"

// SubjectPrefix is the subject prefix of call events: invokeari.calls.<id>.<kind>.
const SubjectPrefix = "invokeari.calls"

// EventSubjects matches every call event and nothing else: exactly two tokens after
// the prefix. Not `invokeari.calls.>`, which would also take in the request subject
// invokeari.calls.get (the stream would store each request and answer it with a PubAck
// that races the daemon's reply).
const EventSubjects = SubjectPrefix + ".*.*"

// DuplicateWindow is how long the stream remembers a Nats-Msg-Id to drop a re-sent event.
const DuplicateWindow = 2 * time.Minute

// ErrInvalidSubject reports a call id or kind that cannot be a NATS subject token.
var ErrInvalidSubject = errors.New("invalid subject token")

// Subject is the subject an event of kind k for call id is published on.
func Subject(id string, k Kind) string {
	return SubjectPrefix + "." + id + "." + string(k)
}

// MsgID is the Nats-Msg-Id of the event with sequence seq of call id: "<id>.<seq>".
func MsgID(id string, seq uint64) string {
	return id + "." + strconv.FormatUint(seq, 10)
}

// validToken reports whether s can stand as one subject token: not empty, no dot,
// no wildcard, no whitespace or control character.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f
	})
}

// StreamManager is the part of jetstream.JetStream that EnsureStream needs.
type StreamManager interface {
	CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
}

// EnsureStream creates the INVOKEARI_CALLS stream, or updates it to the wanted
// configuration: subjects EventSubjects, file storage, events kept for maxAge
// (0 keeps them until limits are hit) and duplicates dropped within DuplicateWindow.
// JetStream does not allow a duplicate window longer than MaxAge, so a maxAge under
// two minutes shortens the window to maxAge.
func EnsureStream(ctx context.Context, js StreamManager, maxAge time.Duration) error {
	return EnsureReplicatedStream(ctx, js, maxAge, 1)
}

// EnsureReplicatedStream is EnsureStream with the stream kept on replicas servers of a
// NATS cluster (1 on a single server; 3 on a cluster keeps it through the loss of one
// node). Placement is left to JetStream. While the cluster has not elected its
// JetStream leader yet the request is retried until ctx ends.
func EnsureReplicatedStream(ctx context.Context, js StreamManager, maxAge time.Duration, replicas int) error {
	if replicas < 1 {
		replicas = 1
	}
	if maxAge < 0 {
		return fmt.Errorf("ensure stream %s: negative max age %s", StreamName, maxAge)
	}
	dup := DuplicateWindow
	if maxAge > 0 && maxAge < dup {
		dup = maxAge
	}
	cfg := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "invokeari call events",
		Subjects:    []string{EventSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Discard:     jetstream.DiscardOld,
		MaxAge:      maxAge,
		Duplicates:  dup,
		AllowDirect: true, // the call registry's look-ups by subject are direct gets
	}
	err := RetryUnavailable(ctx, func(ctx context.Context) error {
		_, err := js.CreateOrUpdateStream(ctx, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", StreamName, err)
	}
	return nil
}
