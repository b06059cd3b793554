package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/matchers"
)

// Traffic counts the packets and bytes given each verdict, by queue and
// hook. Count is one atomic add per counter on a fixed array cell (no map,
// no label lookup, no allocation), so it belongs on the packet path; the
// collector turns the cells into labelled series at scrape time.
type Traffic struct {
	first uint16
	hooks matchers.HookMask
	q     []trafficCells
}

// trafficHooks are the cells per queue: the five netfilter hooks and one
// for anything else (HookNone in tests).
const trafficHooks = 6

// trafficCells is one queue's cells, [hook][0 accept, 1 drop].
type trafficCells [trafficHooks][2]struct{ packets, bytes atomic.Uint64 }

// NewTraffic returns counters for the queues of qr. Series are exported
// from the first scrape for every queue, verdict and hook in hooks (so
// rate() sees them start at zero), and for other hooks once they count.
func NewTraffic(qr QueueRange, hooks []matchers.Hook) *Traffic {
	t := &Traffic{first: qr.First, q: make([]trafficCells, int(qr.Last)-int(qr.First)+1)}
	for _, h := range hooks {
		if h < trafficHooks-1 {
			t.hooks |= 1 << h
		}
	}
	return t
}

// Count adds one packet of n bytes from queue with verdict drop (true) or
// accept (false) at hook. A queue outside the range is ignored.
func (t *Traffic) Count(queue uint16, hook matchers.Hook, drop bool, n int) {
	if t == nil {
		return
	}
	i := int(queue) - int(t.first)
	if i < 0 || i >= len(t.q) {
		return
	}
	h := int(hook)
	if h >= trafficHooks-1 {
		h = trafficHooks - 1
	}
	v := 0
	if drop {
		v = 1
	}
	c := &t.q[i][h][v]
	c.packets.Add(1)
	c.bytes.Add(uint64(n))
}

// FlowStats is what the metrics read of a connection tracking table
// (*conntrack.Table has it).
type FlowStats interface {
	Stats() conntrack.Stats
}

// trafficSource and flowSource are how the collector finds the daemon's
// traffic counters (Traffic) and connection table (Conntrack, nil with
// --no-conntrack), if it has them: through methods rather than fields, so
// the collector does not depend on how the daemon stores them.
type trafficSource interface{ Traffic() *Traffic }
type flowSource interface{ Conntrack() *conntrack.Table }

// newLatencyHistogram measures the time from a packet's arrival in a
// reader to its verdict: 5 µs to about 80 ms in factors of two.
func newLatencyHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "qtables_verdict_latency_seconds",
		Help:    "Time from a packet's arrival from the kernel queue to its verdict.",
		Buckets: prometheus.ExponentialBuckets(5e-6, 2, 15),
	})
}

// serveMetrics serves /metrics on addr until the returned function is
// called; bound is the address actually bound.
func (d *Daemon) serveMetrics(addr string) (bound string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics: %w", err)
	}
	reg := NewMetrics(d).registry()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{d}}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics server stopped", "err", err)
		}
	}()
	d.log.Info("serving metrics", "addr", ln.Addr().String())
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// slogErrorLog routes promhttp's errors to the daemon's logger.
type slogErrorLog struct{ d *Daemon }

func (l slogErrorLog) Println(v ...any) { l.d.log.Error("metrics", "err", fmt.Sprint(v...)) }

// Metrics exports the daemon's statistics, the kernel's queue counters and
// every rule's counters to Prometheus. It reads them at scrape time (the
// packet path updates only its own atomic counters), so a scrape costs
// nothing between scrapes.
type Metrics struct {
	d *Daemon

	received, verdicts, marked, undecodable, panics  *prometheus.Desc
	offloaded, rejects, logEvents, logLines, enobufs *prometheus.Desc
	verdictErrs, readErrs, reloads, rejectReplies    *prometheus.Desc
	kWaiting, kDropped                               *prometheus.Desc
	rulePackets, ruleBytes                           *prometheus.Desc
	packets, bytes                                   *prometheus.Desc
	flowEntries, flowMax, flowEvents                 *prometheus.Desc

	// traffic and flows are the daemon's traffic counters and connection
	// table, when it has them.
	traffic   *Traffic
	flows     FlowStats
	flowLimit int
}

// registry returns a registry holding m.
func (m *Metrics) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	return reg
}

// NewMetrics returns a collector for d; register it with a
// prometheus.Registry.
func NewMetrics(d *Daemon) *Metrics {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("qtables_"+name, help, labels, nil)
	}
	m := &Metrics{
		d:           d,
		received:    desc("packets_received_total", "Packets read from the kernel queues."),
		verdicts:    desc("verdicts_total", "Verdicts given, by verdict (drop includes REJECT).", "verdict"),
		marked:      desc("packets_marked_total", "Verdicts that carried a packet mark set by the rules."),
		undecodable: desc("packets_undecodable_total", "Packets that were not IPv4 datagrams the rules can judge (default verdict)."),
		panics:      desc("panics_total", "Packets whose judging panicked (default verdict)."),
		offloaded:   desc("offloaded_flows_total", "Flows handed to the kernel's connmark fast path."),
		rejects:     desc("reject_events_total", "REJECT targets hit (the packet is dropped)."),
		rejectReplies: desc("reject_replies_total",
			"REJECT replies by outcome: sent, failed, or why the kernel would send none (fragment, rst, icmp_error, broadcast, source, bad_checksum, truncated, not_tcp, rate_limited).", "outcome"),
		logEvents:   desc("log_events_total", "LOG targets hit."),
		logLines:    desc("log_lines_total", "LOG lines, by outcome (written, dropped by the rate limit or a full buffer).", "outcome"),
		enobufs:     desc("enobufs_total", "Receive buffer overruns: the kernel could not deliver queued packets."),
		verdictErrs: desc("verdict_errors_total", "Verdicts the kernel refused."),
		readErrs:    desc("read_errors_total", "Queue receive errors other than ENOBUFS."),
		reloads:     desc("reloads_total", "Rule reloads, by result.", "result"),
		kWaiting:    desc("kernel_queue_waiting", "Packets waiting in the kernel queue for a verdict.", "queue"),
		kDropped: desc("kernel_queue_dropped_total",
			"Packets the kernel dropped, by reason: queue_full (queue_dropped) or undeliverable (user_dropped).", "queue", "reason"),
		rulePackets: desc("rule_packets_total", "Packets that matched a rule (rule 0: the chain policy).", "table", "chain", "rule"),
		ruleBytes:   desc("rule_bytes_total", "Bytes that matched a rule (rule 0: the chain policy).", "table", "chain", "rule"),
		packets:     desc("packets_total", "Packets given a verdict, by queue, hook and verdict (drop includes REJECT).", "queue", "hook", "verdict"),
		bytes:       desc("bytes_total", "Bytes of the packets given a verdict, by queue, hook and verdict.", "queue", "hook", "verdict"),
		flowEntries: desc("flows", "Entries in the connection tracking table."),
		flowMax:     desc("flows_max", "The connection tracking table's size (--ct-max)."),
		flowEvents: desc("flow_events_total",
			"Connection tracking events: created (confirmed), expired (removed by the timeout sweep), early_drop (unassured entries evicted for room), drop (packets dropped: table full or a lost clash), deleted, invalid.", "event"),
	}
	if s, ok := any(d).(trafficSource); ok {
		m.traffic = s.Traffic()
	}
	if s, ok := any(d).(flowSource); ok {
		if t := s.Conntrack(); t != nil {
			m.flows = t
			m.flowLimit = d.cfg.CtMax
			if m.flowLimit == 0 {
				m.flowLimit = conntrack.DefaultMaxEntries
			}
		}
	}
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.received, m.verdicts, m.marked, m.undecodable, m.panics, m.offloaded,
		m.rejects, m.rejectReplies, m.logEvents, m.logLines, m.enobufs, m.verdictErrs, m.readErrs, m.reloads, m.kWaiting, m.kDropped,
		m.rulePackets, m.ruleBytes, m.packets, m.bytes, m.flowEntries, m.flowMax, m.flowEvents} {
		ch <- d
	}
	m.d.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.d.latency.Collect(ch)
	st := m.d.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(m.received, st.Received)
	counter(m.verdicts, st.Accepted, "accept")
	counter(m.verdicts, st.Dropped, "drop")
	counter(m.marked, st.Marked)
	counter(m.undecodable, st.Undecodable)
	counter(m.panics, st.Panics)
	counter(m.offloaded, st.Offloaded)
	counter(m.rejects, st.RejectEvents)
	for outcome, n := range st.RejectReplies {
		counter(m.rejectReplies, n, outcome)
	}
	counter(m.logEvents, st.LogEvents)
	counter(m.logLines, st.LogWritten, "written")
	counter(m.logLines, st.LogDropped, "dropped")
	counter(m.enobufs, st.ENOBUFS)
	counter(m.verdictErrs, st.VerdictErrors)
	counter(m.readErrs, st.ReadErrors)
	counter(m.reloads, st.Reloads, "ok")
	counter(m.reloads, st.ReloadFailures, "failed")
	for _, q := range st.Kernel {
		n := strconv.Itoa(int(q.Queue))
		ch <- prometheus.MustNewConstMetric(m.kWaiting, prometheus.GaugeValue, float64(q.Waiting), n)
		counter(m.kDropped, uint64(q.QueueDropped), n, "queue_full")
		counter(m.kDropped, uint64(q.UserDropped), n, "undeliverable")
	}
	m.collectTraffic(counter)
	if m.flows != nil {
		fs := m.flows.Stats()
		ch <- prometheus.MustNewConstMetric(m.flowEntries, prometheus.GaugeValue, float64(fs.Entries))
		if m.flowLimit > 0 {
			ch <- prometheus.MustNewConstMetric(m.flowMax, prometheus.GaugeValue, float64(m.flowLimit))
		}
		counter(m.flowEvents, fs.Inserted, "created")
		counter(m.flowEvents, fs.Expired, "expired")
		counter(m.flowEvents, fs.EarlyDrop, "early_drop")
		counter(m.flowEvents, fs.Drop, "drop")
		counter(m.flowEvents, fs.Deleted, "deleted")
		counter(m.flowEvents, fs.Invalid, "invalid")
	}
	rs := m.d.Rules().Set
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			if c.Builtin {
				p, b := c.Counters.Get()
				counter(m.rulePackets, p, t.Name, c.Name, "0")
				counter(m.ruleBytes, b, t.Name, c.Name, "0")
			}
			for i, r := range c.Rules {
				p, b := r.Counters.Get()
				n := strconv.Itoa(i + 1)
				counter(m.rulePackets, p, t.Name, c.Name, n)
				counter(m.ruleBytes, b, t.Name, c.Name, n)
			}
		}
	}
}

// collectTraffic exports the traffic cells: every cell of a configured
// hook, and the cells of other hooks that have counted.
func (m *Metrics) collectTraffic(counter func(d *prometheus.Desc, v uint64, labels ...string)) {
	t := m.traffic
	if t == nil {
		return
	}
	verdicts := [2]string{"accept", "drop"}
	for qi := range t.q {
		queue := strconv.Itoa(int(t.first) + qi)
		for h := range t.q[qi] {
			for v := range t.q[qi][h] {
				c := &t.q[qi][h][v]
				p := c.packets.Load()
				if p == 0 && !t.hooks.Has(matchers.Hook(h)) {
					continue
				}
				hook := matchers.Hook(h).String()
				counter(m.packets, p, queue, hook, verdicts[v])
				counter(m.bytes, c.bytes.Load(), queue, hook, verdicts[v])
			}
		}
	}
}
