package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

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
	return &Metrics{
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
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.received, m.verdicts, m.marked, m.undecodable, m.panics, m.offloaded,
		m.rejects, m.rejectReplies, m.logEvents, m.logLines, m.enobufs, m.verdictErrs, m.readErrs, m.reloads, m.kWaiting, m.kDropped,
		m.rulePackets, m.ruleBytes} {
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
