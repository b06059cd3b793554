package queue

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/qtables/qtables/conntrack"
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
		// The daemon's own flow table: the two accepted packets' flows
		// were confirmed, the two dropped ones discarded.
		{"qtables_flows", nil, 2},
		{"qtables_flows_max", nil, float64(conntrack.DefaultMaxEntries)},
		{"qtables_flow_events_total", map[string]string{"event": "created"}, 2},
		{"qtables_flow_events_total", map[string]string{"event": "expired"}, 0},
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

// fakeFlows is a connection table's statistics, set by the test.
type fakeFlows struct{ st conntrack.Stats }

func (f *fakeFlows) Stats() conntrack.Stats { return f.st }

// TestMetricsTrafficAndFlows scrapes the per-queue, per-hook traffic
// series and the connection table's series twice and checks that every
// series exists from the first scrape and moves by what was counted.
func TestMetricsTrafficAndFlows(t *testing.T) {
	d := testDaemon(t, testRules, io.Discard, &bytes.Buffer{})
	m := NewMetrics(d)
	m.traffic = NewTraffic(QueueRange{First: 4, Last: 5}, []matchers.Hook{matchers.HookInput, matchers.HookForward})
	flows := &fakeFlows{}
	m.flows = flows
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)

	scrape := func() map[string]float64 {
		t.Helper()
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, f := range fams {
			for _, mt := range f.GetMetric() {
				k := f.GetName()
				for _, l := range mt.GetLabel() {
					k += "," + l.GetName() + "=" + l.GetValue()
				}
				out[k] = value(mt)
			}
		}
		return out
	}
	before := scrape()
	// Every configured queue x hook x verdict exists at zero; hooks not
	// configured do not (yet).
	for _, q := range []string{"4", "5"} {
		for _, h := range []string{"INPUT", "FORWARD"} {
			for _, v := range []string{"accept", "drop"} {
				for _, name := range []string{"qtables_packets_total", "qtables_bytes_total"} {
					k := name + ",hook=" + h + ",queue=" + q + ",verdict=" + v
					if got, ok := before[k]; !ok || got != 0 {
						t.Errorf("%s = %v, %v; want 0, present", k, got, ok)
					}
				}
			}
		}
	}
	if _, ok := before["qtables_packets_total,hook=OUTPUT,queue=4,verdict=accept"]; ok {
		t.Error("OUTPUT series exported before it was configured or counted")
	}

	m.traffic.Count(4, matchers.HookInput, false, 60)
	m.traffic.Count(4, matchers.HookInput, false, 40)
	m.traffic.Count(5, matchers.HookForward, true, 1500)
	m.traffic.Count(4, matchers.HookOutput, true, 28)
	m.traffic.Count(9, matchers.HookInput, false, 1) // not our queue: ignored
	flows.st = conntrack.Stats{Entries: 3, Inserted: 7, Expired: 2, EarlyDrop: 1, Drop: 5, Deleted: 1, Invalid: 4}

	after := scrape()
	for k, want := range map[string]float64{
		"qtables_packets_total,hook=INPUT,queue=4,verdict=accept": 2,
		"qtables_bytes_total,hook=INPUT,queue=4,verdict=accept":   100,
		"qtables_packets_total,hook=FORWARD,queue=5,verdict=drop": 1,
		"qtables_bytes_total,hook=FORWARD,queue=5,verdict=drop":   1500,
		"qtables_packets_total,hook=OUTPUT,queue=4,verdict=drop":  1,
		"qtables_packets_total,hook=INPUT,queue=5,verdict=accept": 0,
		"qtables_flows": 3,
		"qtables_flow_events_total,event=created":    7,
		"qtables_flow_events_total,event=expired":    2,
		"qtables_flow_events_total,event=early_drop": 1,
		"qtables_flow_events_total,event=drop":       5,
		"qtables_flow_events_total,event=invalid":    4,
		"qtables_offloaded_flows_total":              0,
		"qtables_enobufs_total":                      0,
	} {
		got, ok := after[k]
		if !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if _, ok := after["qtables_packets_total,hook=INPUT,queue=9,verdict=accept"]; ok {
		t.Error("a packet of a queue outside the range was exported")
	}
}

// TestTrafficCountAllocs: the per-packet counting allocates nothing.
func TestTrafficCountAllocs(t *testing.T) {
	tr := NewTraffic(QueueRange{0, 3}, []matchers.Hook{matchers.HookInput})
	if n := testing.AllocsPerRun(1000, func() { tr.Count(2, matchers.HookInput, true, 64) }); n != 0 {
		t.Errorf("Count: %v allocs, want 0", n)
	}
	var nilT *Traffic
	nilT.Count(0, matchers.HookInput, false, 1) // a daemon without counters
}

func BenchmarkTrafficCount(b *testing.B) {
	tr := NewTraffic(QueueRange{0, 3}, []matchers.Hook{matchers.HookInput})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tr.Count(uint16(i&3), matchers.HookInput, i&1 == 0, 64)
	}
}

// TestDashboardNames: every metric the Grafana dashboard queries is one the
// collector describes, so a renamed metric cannot leave a blank panel.
func TestDashboardNames(t *testing.T) {
	b, err := os.ReadFile("../deploy/grafana/qtables.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	d := testDaemon(t, testRules, io.Discard, &bytes.Buffer{})
	ch := make(chan *prometheus.Desc, 100)
	NewMetrics(d).Describe(ch)
	close(ch)
	described := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for desc := range ch {
		if m := fq.FindStringSubmatch(desc.String()); m != nil {
			described[m[1]] = true
		}
	}
	name := regexp.MustCompile(`qtables_[a-z_]+`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, used := range name.FindAllString(tg.Expr, -1) {
				n++
				base := strings.TrimSuffix(used, "_bucket")
				if !described[base] {
					t.Errorf("panel %q queries %s, which the collector does not export", p.Title, used)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d metric references in the dashboard", n)
	}
}
