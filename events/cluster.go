package events

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// retryPace is how long RetryUnavailable waits between tries.
const retryPace = 250 * time.Millisecond

// attemptTimeout bounds one try of RetryUnavailable.
const attemptTimeout = 5 * time.Second

// RetryUnavailable runs f until it succeeds, fails for a reason other than JetStream
// being unavailable for now, or ctx ends. A NATS cluster answers 503 (or nobody
// answers) until its nodes have elected a JetStream meta leader, and a replicated stream
// cannot be placed until enough nodes are up: a daemon starting with its cluster waits
// for that instead of failing.
func RetryUnavailable(ctx context.Context, f func(ctx context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := f(actx)
		cancel()
		if err == nil || !temporarilyUnavailable(err) || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(retryPace)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// temporarilyUnavailable: JetStream has no leader or not enough peers yet.
func temporarilyUnavailable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 10005: the cluster does not know enough peers for the replicas yet.
		return apiErr.Code == 503 || apiErr.ErrorCode == jetstream.ErrorCode(10005)
	}
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}
