package natsdoor

import (
	"context"

	"github.com/nats-io/nats.go"

	"github.com/invokeari/invokeari/bridge/api"
)

// The call-control subjects (SPEC §8): JSON `{id}` on GetSubject and `{id, reason?}` on
// HangupSubject, the same replies as GET and DELETE /v2/calls/{id}. Rules and replies
// are bridge/api's; these only carry the key and the body in and the envelope out.

func (d *Door) handleGet(ctx context.Context, m *nats.Msg) { d.control(ctx, m, api.GetCall) }

func (d *Door) handleHangup(ctx context.Context, m *nats.Msg) { d.control(ctx, m, api.HangupCall) }

func (d *Door) control(ctx context.Context, m *nats.Msg,
	do func(context.Context, api.CallControl, *api.Principal, api.ControlFields) (api.Envelope, int)) {
	p, aerr := d.principal(m)
	var f api.ControlFields
	if aerr == nil {
		f, aerr = api.DecodeControl(m.Data)
	}
	if aerr != nil {
		env, status := api.Failure(aerr, nil)
		d.log.Info("call control refused", "subject", m.Subject, "status", status, "code", aerr.Code, "field", aerr.Field)
		d.publish(m, status, env, aerr.RetryAfterSeconds())
		return
	}
	env, status := do(ctx, d.cfg.Calls, p, f)
	retry := 0
	if env.Error != nil {
		retry = env.Error.RetryAfterSeconds()
		d.log.Info("call control refused", "subject", m.Subject, "key", p.Name, "status", status,
			"code", env.Error.Code, "field", env.Error.Field)
	}
	d.publish(m, status, env, retry)
}
