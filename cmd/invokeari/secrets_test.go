package main

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/invokeari/invokeari/events"
)

// TestNoSecretLeaks runs calls that carry every secret (API key, aripass, the ARI
// password) through success and failure paths, then greps everything the daemon wrote:
// logs, replies, transcripts, published events and metrics.
func TestNoSecretLeaks(t *testing.T) {
	e := startEnv(t, "")
	var seen strings.Builder
	send := func(form url.Values, hdr map[string]string) {
		r := e.post(form, hdr)
		seen.WriteString(r.Raw)
		for k, vs := range r.Header {
			seen.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
		}
	}
	base := func(d, id string) url.Values {
		return url.Values{"d": {d}, "c": {"confirmcode"}, "e": {"s"}, "wait": {"end"}, "id": {id},
			"ariuser": {testARIUser}, "aripass": {testARIPass}}
	}
	send(base("PJSIP/answerwait", "sec-1"), nil)
	send(base("PJSIP/busy", "sec-2"), nil)
	send(base("PJSIP/nosuch", "sec-3"), nil)
	wrong := base("PJSIP/busy", "sec-4")
	wrong.Set("aripass", testARIPass+"x")
	send(wrong, nil)
	send(base("PJSIP/busy", "sec-5"), map[string]string{"X-API-Key": testAPIKey + "x"})

	for _, id := range []string{"sec-1", "sec-2", "sec-3"} {
		for _, ev := range e.streamEvents(t, events.SubjectPrefix+"."+id+".>", map[string]int{"sec-1": 4, "sec-2": 2, "sec-3": 1}[id]) {
			seen.WriteString(ev.Reason + ev.Channel)
			if ev.Request != nil {
				seen.WriteString(strings.Join([]string{ev.Request.Destination, ev.Request.Server, ev.Key}, " "))
			}
		}
	}
	resp, err := http.Get(e.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"invokeari_originates_total", "invokeari_ari_retries_total 0"} {
		if !strings.Contains(string(metrics), name) {
			t.Errorf("metrics lack %s", name)
		}
	}
	seen.Write(metrics)
	e.stop()
	seen.WriteString(e.logs.String())
	all := seen.String()
	if !strings.Contains(all, "call ended") {
		t.Fatalf("the daemon's logs were not captured")
	}
	for name, secret := range map[string]string{"API key": testAPIKey, "ARI password": testARIPass} {
		if i := strings.Index(all, secret); i >= 0 {
			lo, hi := max(0, i-200), min(len(all), i+200)
			t.Errorf("%s leaked: ...%s...", name, all[lo:hi])
		}
	}
}
