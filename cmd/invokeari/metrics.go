package main

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/callbacks"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// metrics is the daemon's Prometheus registry (SPEC §6). Labels never carry secrets:
// keys appear by name only.
type metrics struct {
	reg        *prometheus.Registry
	outcomes   *prometheus.CounterVec
	replies    *prometheus.CounterVec
	ariLatency *prometheus.HistogramVec
	eventLag   prometheus.Histogram
	reconciled *prometheus.CounterVec

	cbAttempts  *prometheus.HistogramVec
	cbDelivered prometheus.Histogram
	cbFailed    prometheus.Counter
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &metrics{
		reg: reg,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "invokeari_originates_total",
			Help: "Calls ended, by front door, API key name, server and outcome."}, []string{"door", "key", "server", "outcome"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "invokeari_replies_total",
			Help: "Originate replies by front door, API key name and status code."}, []string{"door", "key", "status"}),
		ariLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "invokeari_ari_request_seconds",
			Help: "ARI REST round-trip time by operation.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"op", "ok"}),
		eventLag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "invokeari_ari_event_lag_seconds",
			Help: "Time from an ARI event's timestamp to its handling.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		reconciled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "invokeari_reconciliations_total",
			Help: "Tracked calls checked after an ARI reconnect, by result."}, []string{"result"}),
	}
	m.cbAttempts = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "invokeari_callback_attempt_seconds",
		Help:    "Status callback POSTs by result (delivered, gone, retry, error) and their duration; _count is the attempts.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15)}, []string{"result"})
	m.cbDelivered = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "invokeari_callback_delivery_seconds",
		Help:    "Status callbacks delivered: time from the event being stored in JetStream to the receiver's 2xx; _count is the deliveries.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 24)})
	m.cbFailed = prometheus.NewCounter(prometheus.CounterOpts{Name: "invokeari_callbacks_failed_total",
		Help: "Status callbacks given up (published on invokeari.callbacks.failed)."})
	reg.MustRegister(m.outcomes, m.replies, m.ariLatency, m.eventLag, m.reconciled, m.cbAttempts, m.cbDelivered, m.cbFailed)
	return m
}

// register adds the gauges read from the running parts.
func (m *metrics) register(app *stasisapp.App, pub *events.Publisher, clients []*ari.Client) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "invokeari_calls_in_flight", Help: "Calls not yet ended."},
			func() float64 { return float64(app.InFlight()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "invokeari_outbox_depth", Help: "Call events waiting to be stored in JetStream."},
			func() float64 { return float64(pub.Depth()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "invokeari_events_published_total", Help: "Call events acknowledged by JetStream."},
			func() float64 { return float64(pub.Published()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "invokeari_events_dropped_total",
			Help: "Call events that could not be queued for publishing (only possible while stopping hard); must stay 0."},
			func() float64 { return float64(app.PublishFailures()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "invokeari_ari_reconnects_total", Help: "ARI websocket reconnects over all servers."},
			sum(clients, (*ari.Client).Reconnects)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "invokeari_ari_retries_total",
			Help: "ARI REST requests sent again after a transport error (a connection Asterisk closed or refused), over all configured servers."},
			sum(clients, (*ari.Client).Retries)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "invokeari_ari_events_skipped_total",
			Help: "ARI events of channels that are no call (the ;2 half of a Local channel) left undecoded, over all configured servers."},
			sum(clients, (*ari.Client).Skipped)),
	)
}

// sum is a counter over every client.
func sum(clients []*ari.Client, count func(*ari.Client) uint64) func() float64 {
	return func() float64 {
		var n uint64
		for _, c := range clients {
			n += count(c)
		}
		return float64(n)
	}
}

func (m *metrics) callbackHooks() callbacks.Hooks {
	return callbacks.Hooks{
		Attempt:   func(result string, took time.Duration) { m.cbAttempts.WithLabelValues(result).Observe(took.Seconds()) },
		Delivered: func(lat time.Duration) { m.cbDelivered.Observe(lat.Seconds()) },
		GaveUp:    m.cbFailed.Inc,
	}
}

func (m *metrics) registerCallbacks(d *callbacks.Deliverer) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "invokeari_callbacks_pending",
		Help: "Status callbacks waiting for delivery (first try or retry)."}, func() float64 { return float64(d.Pending()) }))
}

func (m *metrics) hooks() stasisapp.Hooks {
	return stasisapp.Hooks{
		Ended: func(req stasisapp.Request, rec events.Call) {
			m.outcomes.WithLabelValues(req.Door, req.Key, rec.Server, string(rec.Outcome)).Inc()
		},
		ARIRequest: func(op string, d time.Duration, err error) {
			m.ariLatency.WithLabelValues(op, strconv.FormatBool(err == nil)).Observe(d.Seconds())
		},
		EventLag:   func(d time.Duration) { m.eventLag.Observe(d.Seconds()) },
		Reconciled: func(result string) { m.reconciled.WithLabelValues(result).Inc() },
	}
}

func (m *metrics) observeReply(door string) func(key string, status int) {
	return func(key string, status int) {
		m.replies.WithLabelValues(door, key, strconv.Itoa(status)).Inc()
	}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
