package queue

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/qtables/qtables/matchers"
)

func TestMetrics(t *testing.T) {
	var logs bytes.Buffer
	d := testDaemon(t, testRules, io.Discard, &logs)
	q := &fakeQueue{}
	w := d.newWorker()
	now := time.Now()
	for i, p := range [][]byte{
		tcpSyn("10.0.1.2", "10.0.2.2", 1, 80), tcpSyn("10.0.1.2", "10.0.2.2", 1, 81),
		tcpSyn("10.0.1.2", "10.0.2.2", 2, 81), icmpEcho("10.0.1.2", "10.0.2.2"),
	} {
		d.cnt.received.Add(1)
		d.handle(w, &job{q: q, id: uint32(i), data: p, hook: uint8(matchers.HookForward), arrived: now})
	}
	fams, err := NewMetrics(d).registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string, labels map[string]string) float64 {
		t.Helper()
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
		next:
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
						continue next
					}
				}
				return value(m)
			}
		}
		t.Fatalf("no metric %s%v", name, labels)
		return 0
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"qtables_packets_received_total", nil, 4},
		{"qtables_verdicts_total", map[string]string{"verdict": "accept"}, 2},
		{"qtables_verdicts_total", map[string]string{"verdict": "drop"}, 2},
		{"qtables_packets_marked_total", nil, 1},
		{"qtables_log_events_total", nil, 2},
		{"qtables_rule_packets_total", map[string]string{"table": "filter", "chain": "FORWARD", "rule": "3"}, 2},
		{"qtables_rule_bytes_total", map[string]string{"table": "filter", "chain": "FORWARD", "rule": "3"}, 80},
		{"qtables_rule_packets_total", map[string]string{"table": "mangle", "chain": "FORWARD", "rule": "1"}, 1},
		{"qtables_rule_packets_total", map[string]string{"table": "filter", "chain": "FORWARD", "rule": "0"}, 0},
		{"qtables_verdict_latency_seconds", nil, 4}, // sample count
	}
	for _, c := range checks {
		if got := get(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// Served over HTTP on loopback.
	addr, stop, err := d.serveMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "qtables_packets_received_total 4\n") ||
		!strings.Contains(string(body), `qtables_rule_packets_total{chain="FORWARD",rule="3",table="filter"} 2`) {
		t.Errorf("metrics page:\n%s", body)
	}
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}
