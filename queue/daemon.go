package queue

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
)

// Config configures a Daemon. The zero value of every optional field
// picks the documented default.
type Config struct {
	// RulesPath is the rules file (iptables-save format); Reload re-reads it.
	RulesPath string
	// Hooks are the kernel hooks to install and the queues they feed.
	Hooks HookConfig
	// Workers is the size of a judging pool. 0 (the default) judges each
	// packet in its queue's reader, in the kernel's order, and gives the
	// verdicts of a whole receive batch in one message: the fastest way
	// with as many queues as cores. N > 0 hands packets to N workers by
	// flow (a flow always goes to the same worker and keeps its order),
	// for rules too costly for one core per queue.
	Workers int
	// QueueLen is the kernel queue's length in packets (default 1024,
	// the kernel's own default).
	QueueLen uint32
	// SockBuf is the netlink receive buffer in bytes (default 4 MiB); a
	// bigger one absorbs longer bursts before the kernel drops (ENOBUFS).
	SockBuf int
	// FailOpen sets the queue's fail-open flag: when the queue is full the
	// kernel accepts packets instead of dropping them.
	FailOpen bool
	// DefaultDrop gives packets that cannot be judged (a panic, an
	// undecodable packet, a verdict other than ACCEPT/DROP) DROP instead
	// of the default ACCEPT.
	DefaultDrop bool
	// LogWriter receives the LOG events: PlainLog, JSONLog, SyslogLog
	// (default: PlainLog(LogOutput), or discarded without LogOutput).
	// LogRate limits them per second (0: 100), LogBurst is the bucket size
	// (0: 2*LogRate).
	LogWriter LogWriter
	LogOutput io.Writer
	LogRate   float64
	LogBurst  int
	// CountersFile and StatsFile, when set, are written on exit and by
	// WriteFiles: the rule set with counters (iptables-save -c format) and
	// the daemon's statistics as JSON.
	CountersFile string
	StatsFile    string
	// OffloadAfter is the fast path's inspection depth (with
	// Hooks.OffloadMask): a flow is offloaded to the kernel after this many
	// accepted packets, at least one each way, none marked or logged by
	// the rules (default 4: a TCP handshake and the first data).
	OffloadAfter int
	// DrainTimeout bounds how long shutdown waits for packets already
	// queued after the hooks are gone (default 2s).
	DrainTimeout time.Duration
	// MonitorInterval is how often kernel queue drops are checked and
	// reported (default 5s).
	MonitorInterval time.Duration
	// MetricsAddr, when set, serves Prometheus metrics at /metrics on this
	// address (in the daemon's network namespace).
	MetricsAddr string
	// NoConntrack turns the flow table off: packets are not tracked and
	// the stateful matches (state, conntrack, connmark, connlimit,
	// connbytes) see INVALID.
	NoConntrack bool
	// CtMax is the flow table's size, nf_conntrack_max (default
	// conntrack.DefaultMaxEntries); the timeouts are the kernel's defaults.
	CtMax int
	// CtFollowKernel expires a flow in qtables' table when the kernel's
	// conntrack destroys it (destroy events over ctnetlink).
	CtFollowKernel bool
	// ControlSocket is the path of the control socket for live rule
	// management ("": DefaultControlSocket(), "none": no socket).
	ControlSocket string
	// Logger receives the daemon's own messages (default slog.Default()).
	Logger *slog.Logger
	// IPTables installs the hooks (default: the iptables binary).
	IPTables IPTables
}

// defaultVerdict is the verdict for packets that cannot be judged.
func (c *Config) defaultVerdict() matchers.Verdict {
	if c.DefaultDrop {
		return matchers.Drop
	}
	return matchers.Accept
}

func (c *Config) defaults() error {
	if c.RulesPath == "" {
		return errors.New("no rules file given (--rules)")
	}
	if err := c.Hooks.Validate(); err != nil {
		return err
	}
	if c.Workers < 0 {
		c.Workers = 0
	}
	if c.QueueLen == 0 {
		c.QueueLen = 1024
	}
	if c.SockBuf == 0 {
		c.SockBuf = 4 << 20
	}
	if c.LogWriter == nil {
		if c.LogOutput != nil {
			c.LogWriter = PlainLog(c.LogOutput)
		} else {
			c.LogWriter = DiscardLog()
		}
	}
	if c.LogRate == 0 {
		c.LogRate = 100
	}
	if c.LogBurst == 0 {
		c.LogBurst = int(2 * c.LogRate)
	}
	if c.Hooks.OffloadMask != 0 && c.OffloadAfter <= 0 {
		c.OffloadAfter = 4
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 2 * time.Second
	}
	if c.MonitorInterval == 0 {
		c.MonitorInterval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// verdicter takes a packet's verdict: a verdictBatch, or a test's fake.
type verdicter interface {
	Verdict(id uint32, verdict int, mark uint32, withMark bool) error
}

// job is one queued packet being judged.
type job struct {
	// q takes the verdict; nil in a pool worker, which uses its own batch
	// for queue qi.
	q  verdicter
	qi int
	// buf is the pooled copy data lives in (pool mode), returned after
	// the verdict.
	buf     *[]byte
	id      uint32
	data    []byte
	hook    uint8
	in, out uint32
	mark    uint32
	// skbInfo holds the NFQA_SKB_INFO flags (checksum state, GSO).
	skbInfo uint32
	hwProto uint16
	hw      [6]byte
	hasHw   bool
	// arrived is when the reader got the packet, for the latency histogram.
	arrived time.Time
}

// Daemon is the live filter: readers, workers, hooks, reload and
// statistics. Create it with New, run it with Run.
type Daemon struct {
	cfg Config
	// traffic counts packets and bytes by queue, hook and verdict for the
	// metrics (one atomic add per packet).
	traffic *Traffic
	log     *slog.Logger
	rules   atomic.Pointer[Rules]
	cnt     counters
	sink    *LogSink
	ifaces  *ifaceCache
	// ct is the flow table shared by every worker (nil with NoConntrack).
	ct *conntrack.Table

	workers []chan job
	// bufs recycles the packet copies of pool mode.
	bufs chan *[]byte
	// pool holds the running workers' states; reloads pause them. reloadMu
	// guards it and serializes reloads.
	reloadMu sync.Mutex
	pool     []*worker
	// editMu serialises the changes of the rule set (Reload, the control
	// socket's commands and restores), each of which builds on the rules
	// in force when it starts.
	editMu   sync.Mutex
	inflight atomic.Int64

	// latency observes the time from a packet's arrival in the reader to
	// its verdict.
	latency prometheus.Histogram

	// rej sends REJECT replies; until Run opens its socket it builds
	// them and counts them as failed.
	rej           atomic.Pointer[rejecter]
	rejectFailLog atomic.Bool
	// lastKernel is the kernel's view of the queues taken just before they
	// were unbound, for the statistics written on exit.
	lastKernel atomic.Pointer[[]KernelQueue]
}

// New loads and compiles the rules and checks the configuration; nothing
// touches the kernel until Run.
// Traffic returns the daemon's per-queue, per-hook traffic counters.
func (d *Daemon) Traffic() *Traffic { return d.traffic }

func New(cfg Config) (*Daemon, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r, err := LoadRules(cfg.RulesPath)
	if err != nil {
		return nil, err
	}
	for _, h := range cfg.Hooks.Hooks {
		if !r.HasHook(h) {
			return nil, fmt.Errorf("%s: no table of the rules has a %s chain (qtables evaluates the chain named after the hook)", cfg.RulesPath, h)
		}
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, ifaces: newIfaceCache(), latency: newLatencyHistogram(),
		traffic: NewTraffic(cfg.Hooks.Queues, cfg.Hooks.Hooks)}
	if !cfg.NoConntrack {
		d.ct = conntrack.New(conntrack.Config{MaxEntries: cfg.CtMax})
	}
	d.rules.Store(r)
	d.rej.Store(newRejecter(-1))
	return d, nil
}

// Rules returns the rules in force.
func (d *Daemon) Rules() *Rules { return d.rules.Load() }

// Reload re-reads the rules file and, if it parses and compiles, swaps it
// in: no packet is lost or judged twice, each is judged wholly by the old
// rules or wholly by the new. On error the running rules stay and the
// error says why. Rules that did not change (the same text in the same
// chain of the same table) keep their counters, and so do the policies of
// unchanged built-in chains; new rules start from the file's counters.
func (d *Daemon) Reload() error {
	d.editMu.Lock()
	defer d.editMu.Unlock()
	r, err := LoadRules(d.cfg.RulesPath)
	if err == nil {
		for _, h := range d.cfg.Hooks.Hooks {
			if !r.HasHook(h) {
				err = fmt.Errorf("%s: no table of the rules has a %s chain", d.cfg.RulesPath, h)
				break
			}
		}
	}
	if err != nil {
		d.cnt.reloadFails.Add(1)
		d.log.Error("reload failed; the running rules stay in force", "rules", d.cfg.RulesPath, "err", err)
		return err
	}
	kept := d.swapRules(r)
	d.cnt.reloads.Add(1)
	d.log.Info("rules reloaded", "rules", d.cfg.RulesPath, "counters_kept", kept)
	return nil
}

// swapRules puts r in force, carrying the counters of unchanged rules
// over. The workers are paused between two packets for the moment of the
// copy, so that no count lands in the old rules after it was copied.
func (d *Daemon) swapRules(r *Rules) int {
	defer d.pauseWorkers()()
	kept := CarryCounters(d.rules.Load().Set, r.Set)
	d.rules.Store(r)
	return kept
}

// pauseWorkers takes the reload lock and every worker's lock, so that no
// packet is being judged until the returned function releases them.
func (d *Daemon) pauseWorkers() (resume func()) {
	d.reloadMu.Lock()
	for _, w := range d.pool {
		w.mu.Lock()
	}
	return func() {
		for _, w := range d.pool {
			w.mu.Unlock()
		}
		d.reloadMu.Unlock()
	}
}

// CarryCounters gives each rule of to that also is in from (same table,
// chain and canonical text, the n-th such rule of the chain to the n-th)
// the counters of its twin, and each built-in chain of to whose policy is
// unchanged the policy counters. It returns the number of rules and
// policies whose counters were carried over.
func CarryCounters(from, to *engine.Ruleset) int {
	kept := 0
	for _, nt := range to.Tables {
		ot := from.Table(nt.Name)
		if ot == nil {
			continue
		}
		for _, nc := range nt.Chains {
			oc := ot.Chain(nc.Name)
			if oc == nil {
				continue
			}
			if nc.Builtin && oc.Builtin && nc.Policy == oc.Policy {
				nc.Counters.Set(oc.Counters.Get())
				kept++
			}
			twins := make(map[string][]*engine.Rule, len(oc.Rules))
			for _, r := range oc.Rules {
				k := r.String()
				twins[k] = append(twins[k], r)
			}
			for _, r := range nc.Rules {
				k := r.String()
				if olds := twins[k]; len(olds) > 0 {
					r.Counters.Set(olds[0].Counters.Get())
					twins[k] = olds[1:]
					kept++
				}
			}
		}
	}
	return kept
}

// Stats returns a snapshot of the statistics, with the kernel's view of the
// daemon's queues.
func (d *Daemon) Stats() Stats {
	s := d.cnt.snapshot()
	s.RejectReplies = d.rej.Load().snapshot()
	s.Conntrack = d.ctStats()
	if d.sink != nil {
		s.LogWritten, s.LogDropped = d.sink.Written(), d.sink.Dropped()
	}
	s.Kernel = d.kernelQueues()
	if len(s.Kernel) == 0 {
		if last := d.lastKernel.Load(); last != nil {
			s.Kernel = *last
		}
	}
	return s
}

// kernelQueues returns the kernel's view of the daemon's queues (none once
// they are unbound).
func (d *Daemon) kernelQueues() []KernelQueue {
	kq, err := ReadKernelQueues(ProcQueuePath)
	if err != nil {
		return nil
	}
	var out []KernelQueue
	for _, q := range kq {
		if q.Queue >= d.cfg.Hooks.Queues.First && q.Queue <= d.cfg.Hooks.Queues.Last {
			out = append(out, q)
		}
	}
	return out
}

// WriteCounters writes the rules in force with their counters, as
// iptables-save -c prints them.
func (d *Daemon) WriteCounters(w io.Writer) error {
	return d.rules.Load().Set.Save(w, engine.SaveOptions{Counters: true, Header: true, Now: time.Now()})
}

// WriteFiles writes the counters file and the stats file, when configured,
// each atomically (a reader never sees half a file).
func (d *Daemon) WriteFiles() error {
	var errs []error
	if d.cfg.CountersFile != "" {
		errs = append(errs, writeAtomic(d.cfg.CountersFile, d.WriteCounters))
	}
	if d.cfg.StatsFile != "" {
		errs = append(errs, writeAtomic(d.cfg.StatsFile, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(d.Stats())
		}))
	}
	return errors.Join(errs...)
}

func writeAtomic(path string, fn func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := fn(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// lockName is the abstract unix socket that marks a running daemon. An
// abstract socket belongs to a network namespace and vanishes with its
// process, however it dies: while it is bound, every QTABLES- chain in the
// namespace belongs to the live daemon; once it is free, they are stale.
const lockName = "@qtables-daemon"

// ErrDaemonRunning is returned by Run when another daemon holds the
// network namespace.
var ErrDaemonRunning = errors.New("another qtables daemon is running in this network namespace")

func lockNamespace() (io.Closer, error) {
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: lockName, Net: "unixgram"})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, ErrDaemonRunning
		}
		return nil, fmt.Errorf("namespace lock: %w", err)
	}
	return c, nil
}

// DaemonRunning reports whether a qtables daemon runs in the calling
// process's network namespace.
func DaemonRunning() bool {
	c, err := lockNamespace()
	if err != nil {
		return errors.Is(err, ErrDaemonRunning)
	}
	c.Close()
	return false
}

// reader is one bound queue.
type reader struct {
	num uint16
	c   *nfqConn
	// w judges the queue's packets in the reader (no pool); nil with a
	// pool. batch collects a read's packets for it, judged together.
	w     *worker
	batch []job
}

// Run binds the queues, installs the hooks, and judges packets until ctx
// is cancelled or a reader fails. On every way out it removes the hooks
// first (new packets then bypass qtables), gives the packets already queued
// their verdicts, unbinds the queues and writes the counters and stats
// files; last it releases the flow table (its flows end with the run).
// The returned error is nil after a cancel.
func (d *Daemon) Run(ctx context.Context) (err error) {
	lock, err := lockNamespace()
	if err != nil {
		return err
	}
	defer lock.Close()
	// The REJECT socket belongs to this namespace, like the queues.
	if rej, rerr := openRejecter(); rerr != nil {
		d.log.Warn("REJECT drops packets but cannot send replies", "err", rerr)
	} else {
		d.rej.Store(rej)
		defer rej.close()
	}
	if d.cfg.MetricsAddr != "" {
		_, stop, err := d.serveMetrics(d.cfg.MetricsAddr)
		if err != nil {
			return err
		}
		defer stop()
	}
	ipt := d.cfg.IPTables
	if ipt == nil {
		if ipt, err = NewIPTables(); err != nil {
			return err
		}
	}
	if stale, ferr := Find(ipt); ferr == nil && len(stale) > 0 {
		d.log.Warn("replacing hooks left by an earlier run", "hooks", fmt.Sprint(stale))
		// Stale hooks this run does not install would keep sending packets
		// to queues nobody reads: without --queue-bypass that drops them.
		if extra := missing(stale, d.cfg.Hooks.Hooks); len(extra) > 0 {
			if rerr := Remove(ipt, extra); rerr != nil {
				return fmt.Errorf("remove stale hooks: %w", rerr)
			}
		}
	}

	d.sink = NewLogSink(d.cfg.LogWriter, d.cfg.LogRate, d.cfg.LogBurst)
	// The flow table's sweeper and the kernel's destroy events live as
	// long as the run; the watcher starts before the hooks so that it sees
	// the end of every connection they let in.
	ctCtx, stopCt := context.WithCancel(ctx)
	waitCt := d.startConntrack(ctCtx)
	// Deferred before the control socket's close, so it runs after it,
	// and after the shutdown has stopped the readers and workers.
	defer d.endConntrack(stopCt, waitCt)
	if path := d.cfg.ControlSocket; path != "none" {
		if path == "" {
			path = DefaultControlSocket()
		}
		cs, cerr := d.listenControl(path)
		if cerr != nil {
			return cerr
		}
		go cs.serve(ctCtx)
		defer cs.close()
		d.log.Info("control socket", "path", path)
	}
	var workWG, readWG sync.WaitGroup
	nq := d.cfg.Hooks.Queues.Len()
	d.workers = make([]chan job, d.cfg.Workers)
	d.bufs = make(chan *[]byte, d.cfg.Workers*workerQueue+recvBatch*nq)
	d.reloadMu.Lock()
	for i := range d.workers {
		d.workers[i] = make(chan job, workerQueue)
		w := d.newWorker()
		d.pool = append(d.pool, w)
		workWG.Add(1)
		go func(w *worker, jobs <-chan job) {
			defer workWG.Done()
			d.work(w, jobs)
		}(w, d.workers[i])
	}
	d.reloadMu.Unlock()

	readCtx, stopReading := context.WithCancel(context.Background())
	fatal := make(chan error, nq)
	var readers []*reader
	shutdown := func(hooksInstalled bool) error {
		var errs []error
		if hooksInstalled {
			if rerr := Remove(ipt, d.cfg.Hooks.Hooks); rerr != nil {
				errs = append(errs, fmt.Errorf("remove hooks: %w", rerr))
				d.log.Error("could not remove hooks", "err", rerr)
			} else {
				d.log.Info("hooks removed")
			}
			d.drain(readers)
		}
		if kq := d.kernelQueues(); len(kq) > 0 {
			d.lastKernel.Store(&kq)
		}
		stopReading()
		readWG.Wait() // within recvTimeout
		for _, r := range readers {
			r.c.close()
		}
		for _, w := range d.workers {
			close(w)
		}
		workWG.Wait()
		d.sink.Close()
		if werr := d.WriteFiles(); werr != nil {
			errs = append(errs, werr)
		}
		return errors.Join(errs...)
	}

	// A panic on this goroutine (in monitor, Install, ...) must not leave
	// the hooks behind: clean up, then let it go on.
	hooksMaybe, done := false, false
	defer func() {
		if !done {
			if p := recover(); p != nil {
				d.log.Error("panic in the daemon; removing hooks", "panic", p, "stack", string(debug.Stack()))
				_ = shutdown(hooksMaybe)
				panic(p)
			}
		}
	}()

	for q := int(d.cfg.Hooks.Queues.First); q <= int(d.cfg.Hooks.Queues.Last); q++ {
		r, oerr := d.openReader(uint16(q), len(readers))
		if oerr != nil {
			done = true
			return errors.Join(oerr, shutdown(false))
		}
		readers = append(readers, r)
	}
	// Pool workers batch their verdicts per queue.
	for _, w := range d.pool {
		for _, r := range readers {
			if r.w == nil {
				vb := newVerdictBatch(r.c, false)
				vb.cnt = &d.cnt
				w.outs = append(w.outs, vb)
			}
		}
	}
	for _, r := range readers {
		readWG.Add(1)
		go func(r *reader) {
			defer readWG.Done()
			d.read(readCtx, r, fatal)
		}(r)
	}
	// From the first Install call on, hooks may exist: every exit removes
	// them, including a failed install.
	hooksMaybe = true
	if ierr := Install(ipt, d.cfg.Hooks); ierr != nil {
		done = true
		return errors.Join(fmt.Errorf("install hooks: %w", ierr), shutdown(true))
	}
	d.log.Info("qtables running", "hooks", fmt.Sprint(d.cfg.Hooks.Hooks), "queues", d.cfg.Hooks.Queues.String(),
		"bypass", d.cfg.Hooks.Bypass, "fail_open", d.cfg.FailOpen, "workers", d.cfg.Workers, "judge_in_reader", d.cfg.Workers == 0,
		"rules", d.cfg.RulesPath)

	runErr := d.monitor(ctx, fatal)
	if runErr != nil {
		d.log.Error("stopping after a fatal error", "err", runErr)
	} else {
		d.log.Info("stopping")
	}
	done = true
	return errors.Join(runErr, shutdown(true))
}

// missing returns the hooks of have that are not in want.
func missing(have, want []matchers.Hook) []matchers.Hook {
	var out []matchers.Hook
	for _, h := range have {
		found := false
		for _, w := range want {
			found = found || w == h
		}
		if !found {
			out = append(out, h)
		}
	}
	return out
}

// monitor waits for the end, checking the kernel's drop counters and
// refreshing the interface cache on every tick.
func (d *Daemon) monitor(ctx context.Context, fatal <-chan error) error {
	t := time.NewTicker(d.cfg.MonitorInterval)
	defer t.Stop()
	last := map[uint16]KernelQueue{}
	var logErrs uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-fatal:
			return err
		case <-t.C:
			d.ifaces.refresh()
			d.rej.Load().refresh()
			kq, err := ReadKernelQueues(ProcQueuePath)
			if err != nil {
				d.log.Warn("cannot read kernel queue statistics", "err", err)
				continue
			}
			for _, q := range kq {
				if q.Queue < d.cfg.Hooks.Queues.First || q.Queue > d.cfg.Hooks.Queues.Last {
					continue
				}
				p := last[q.Queue]
				if q.QueueDropped > p.QueueDropped || q.UserDropped > p.UserDropped {
					d.log.Warn("kernel dropped queued packets", "queue", q.Queue,
						"queue_full", q.QueueDropped-p.QueueDropped, "undeliverable", q.UserDropped-p.UserDropped,
						"hint", "raise --queue-len or --sock-buf, or add workers")
				}
				last[q.Queue] = q
			}
			if n := d.sink.Errors(); n > logErrs {
				d.log.Warn("LOG output failing", "failed_writes", n-logErrs, "err", d.sink.LastError())
				logErrs = n
			}
			if n := d.cnt.enobufs.Load(); n > 0 {
				d.log.Debug("receive buffer overruns so far", "enobufs", n)
			}
		}
	}
}

// drain waits until every packet queued before the hooks went away has its
// verdict, or until the drain timeout.
func (d *Daemon) drain(readers []*reader) {
	deadline := time.Now().Add(d.cfg.DrainTimeout)
	for time.Now().Before(deadline) {
		if d.inflight.Load() == 0 && d.kernelWaiting(readers) == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.log.Warn("shutdown: packets still queued after the drain timeout are dropped by the kernel",
		"in_flight", d.inflight.Load(), "kernel_waiting", d.kernelWaiting(readers))
}

func (d *Daemon) kernelWaiting(readers []*reader) int {
	kq, err := ReadKernelQueues(ProcQueuePath)
	if err != nil {
		return 0
	}
	n := 0
	for _, q := range kq {
		for _, r := range readers {
			if q.Queue == r.num {
				n += int(q.Waiting)
			}
		}
	}
	return n
}

// openReader binds queue num; idx is its place among the readers.
func (d *Daemon) openReader(num uint16, idx int) (*reader, error) {
	early := nfAccept
	if d.cfg.DefaultDrop {
		early = nfDrop
	}
	c, err := openNFQ(num, nfqOptions{queueLen: d.cfg.QueueLen, sockBuf: d.cfg.SockBuf, failOpen: d.cfg.FailOpen, early: early})
	if err != nil {
		return nil, err
	}
	c.idx = idx
	r := &reader{num: num, c: c}
	if d.cfg.Workers == 0 {
		r.w = d.newWorker()
		d.reloadMu.Lock()
		d.pool = append(d.pool, r.w)
		d.reloadMu.Unlock()
	}
	return r, nil
}

// workerQueue is the length of a pool worker's channel.
const workerQueue = 256

// read receives batches from the queue until ctx is cancelled or the
// socket fails. Judging in the reader, each read is judged as one batch
// (handleBatch: one flow table pass for its packets) under the reader's
// worker lock and its verdicts leave in one message; with a pool, each
// packet is copied and handed to the worker of its flow.
func (d *Daemon) read(ctx context.Context, r *reader, fatal chan<- error) {
	rb := newRecvBuf()
	var vb *verdictBatch
	if r.w != nil {
		vb = newVerdictBatch(r.c, true)
		vb.cnt = &d.cnt
	}
	pol := readErrorPolicy{cnt: &d.cnt}
	for {
		n, err := r.c.recv(rb)
		if n == 0 && ctx.Err() != nil {
			// Stopping: the hooks are gone and the queue drained.
			return
		}
		if err != nil {
			stop, ferr := pol.handle(err)
			if ferr != nil {
				fatal <- fmt.Errorf("queue %d: %w", r.num, ferr)
			}
			if stop {
				return
			}
			d.log.Debug("queue read error", "queue", r.num, "err", err)
			continue
		}
		pol.consecutive = 0
		now := time.Now()
		if r.w != nil {
			r.w.mu.Lock()
		}
		for i := 0; i < n; i++ {
			if !d.readMsgs(ctx, r, vb, rb.slot(i), now) {
				break
			}
		}
		if r.w != nil {
			d.judgeRead(r)
			if err := vb.Flush(); err != nil {
				d.cnt.verdictErrs.Add(1)
				d.log.Debug("verdicts not sent", "queue", r.num, "err", err)
			}
			r.w.mu.Unlock()
		}
	}
}

// readMsgs handles the netlink messages of one datagram. It reports false
// when the daemon is stopping.
func (d *Daemon) readMsgs(ctx context.Context, r *reader, vb *verdictBatch, b []byte, now time.Time) bool {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return true
		}
		typ, body := binary.NativeEndian.Uint16(b[4:]), b[unix.NLMSG_HDRLEN:l]
		b = b[min(nlAlign(l), len(b)):]
		switch typ {
		case unix.NLMSG_ERROR:
			// A verdict the kernel refused (the packet had gone).
			if len(body) >= 4 && binary.NativeEndian.Uint32(body) != 0 {
				d.cnt.verdictErrs.Add(1)
			}
		case nfqnlMsgPacket:
			var p nfqPacket
			if !p.parse(body) {
				continue
			}
			d.cnt.received.Add(1)
			jb := job{id: p.id, data: p.payload, hook: p.hook, in: p.in, out: p.out, mark: p.mark,
				skbInfo: p.skbInfo, hwProto: p.hwProto, hw: p.hw, hasHw: p.hasHw, arrived: now, qi: r.c.idx}
			if vb != nil {
				// Judged with the rest of the read (judgeRead), or now
				// if the batch is full.
				jb.q = vb
				d.inflight.Add(1)
				if r.batch == nil {
					r.batch = make([]job, 0, judgeBatch)
				}
				r.batch = append(r.batch, jb)
				if len(r.batch) >= judgeBatch {
					d.judgeRead(r)
				}
				continue
			}
			if !d.dispatch(ctx, &jb) {
				return false
			}
		}
	}
	return true
}

// judgeRead judges the packets the reader collected (readMsgs) as one
// batch; their verdicts join the reader's verdict batch.
func (d *Daemon) judgeRead(r *reader) {
	if len(r.batch) == 0 {
		return
	}
	d.handleBatch(r.w, r.batch)
	d.inflight.Add(-int64(len(r.batch)))
	clear(r.batch) // the payloads alias the receive buffer
	r.batch = r.batch[:0]
}

// readErrorPolicy decides what a receive error means. The reader goes on
// after ENOBUFS (the kernel dropped packets it could not deliver: counted,
// never fatal) and after an error the kernel returns for a verdict (a
// packet id that had already gone); it stops on a closed socket and after
// too many errors in a row, which only a broken socket produces.
type readErrorPolicy struct {
	cnt         *counters
	consecutive int
}

// maxConsecutiveReadErrors is the "too many" above.
const maxConsecutiveReadErrors = 1000

func (p *readErrorPolicy) handle(err error) (stop bool, fatal error) {
	if errors.Is(err, syscall.ENOBUFS) {
		p.cnt.enobufs.Add(1)
		return false, nil
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EBADF) {
		return true, err
	}
	p.cnt.readErrs.Add(1)
	p.consecutive++
	if p.consecutive > maxConsecutiveReadErrors {
		return true, fmt.Errorf("%d read errors in a row, last: %w", p.consecutive, err)
	}
	return false, nil
}

// dispatch copies a packet into a pooled buffer and hands it to the
// worker of its flow. It reports false when the daemon is stopping.
func (d *Daemon) dispatch(ctx context.Context, jb *job) bool {
	var bp *[]byte
	select {
	case bp = <-d.bufs:
	default:
		b := make([]byte, 0, 2048)
		bp = &b
	}
	*bp = append((*bp)[:0], jb.data...)
	jb.data, jb.buf = *bp, bp
	w := d.workers[FlowHash(jb.data)%uint64(len(d.workers))]
	d.inflight.Add(1)
	select {
	case w <- *jb:
		return true
	case <-ctx.Done():
		d.inflight.Add(-1)
		return false
	}
}

// worker is one judging goroutine's state.
type worker struct {
	// mu is held while a packet is judged; a reload takes every worker's
	// to pause them between packets.
	mu sync.Mutex
	j  *Judge
	// ft is the flow table for the fast path (nil without it).
	ft *flowTable
	// rs builds and sends REJECT replies.
	rs rejectScratch
	// outs are a pool worker's verdict batches, one per queue.
	outs []*verdictBatch
}

func (d *Daemon) newWorker() *worker {
	j := NewJudge(d.cfg.defaultVerdict())
	if d.ct != nil {
		j.SetConntrack(d.ct, d.cfg.Hooks.Hooks)
	}
	return &worker{j: j, ft: d.newFlowTable()}
}

// work judges the packets its channel brings, as many as are waiting (up
// to a batch) at a time, sending the verdicts collected whenever the
// channel is empty.
func (d *Daemon) work(w *worker, jobs <-chan job) {
	batch := make([]job, 0, judgeBatch)
	for jb := range jobs {
		batch = append(batch[:0], jb)
	fill:
		for len(batch) < judgeBatch {
			select {
			case jb, ok := <-jobs:
				if !ok {
					break fill
				}
				batch = append(batch, jb)
			default:
				break fill
			}
		}
		w.mu.Lock()
		d.handleBatch(w, batch)
		w.mu.Unlock()
		for i := range batch {
			if bp := batch[i].buf; bp != nil {
				select {
				case d.bufs <- bp:
				default:
				}
			}
		}
		d.inflight.Add(-int64(len(batch)))
		clear(batch)
		if len(jobs) == 0 {
			for _, vb := range w.outs {
				if err := vb.Flush(); err != nil {
					d.cnt.verdictErrs.Add(1)
					d.log.Debug("verdicts not sent", "err", err)
				}
			}
		}
	}
}

// newFlowTable returns a worker's flow table, or nil without the fast path.
func (d *Daemon) newFlowTable() *flowTable {
	if d.cfg.Hooks.OffloadMask == 0 {
		return nil
	}
	return newFlowTable(d.cfg.OffloadAfter)
}

// handle judges one packet, sends the REJECT reply if the rules asked for
// one, and gives the kernel its verdict: handleBatch with a batch of one.
func (d *Daemon) handle(w *worker, jb *job) {
	d.handleBatch(w, []job{*jb})
}

// handleBatch judges jobs in order, each as handle does, tracking them in
// the flow table together (Judge.Track: one TrackBatch per chunk of up to
// judgeBatch packets). The caller holds w.mu, so that the rules do not
// change within the batch.
func (d *Daemon) handleBatch(w *worker, jobs []job) {
	for len(jobs) > 0 {
		n := min(len(jobs), judgeBatch)
		chunk := jobs[:n]
		jobs = jobs[n:]
		j := w.j
		r := d.rules.Load()
		now := time.Now()
		j.Begin()
		for i := range chunk {
			d.add(j, r, &chunk[i], now)
		}
		d.track(j, now)
		for i := range chunk {
			d.finish(w, &chunk[i], d.judge(j, r, i, &chunk[i]))
		}
	}
}

// finish acts on a packet's outcome: the REJECT reply, the fast path, the
// counters and the verdict.
func (d *Daemon) finish(w *worker, jb *job, out Outcome) {
	j, ft := w.j, w.ft
	q := jb.q
	if q == nil {
		q = w.outs[jb.qi]
	}
	if out.Verdict == matchers.Drop && !out.Panicked && !out.Undecodable {
		for i := range j.Events() {
			if ev := &j.Events()[i]; ev.Kind == matchers.EventReject {
				d.sendReject(w, jb, ev, out.Mark)
				break
			}
		}
	}
	mask := d.cfg.Hooks.OffloadMask
	// A packet that already carries the offload bits was marked by someone
	// else, or came back after a repeat: never repeat it again.
	if ft != nil && !out.Undecodable && !out.Unsupported && !out.Panicked && !out.NoChain && jb.mark&mask == 0 &&
		ft.observe(j.view, out.Verdict, out.MarkChanged || len(j.Events()) > 0, time.Now().Unix()) {
		d.cnt.offloaded.Add(1)
		d.cnt.accepted.Add(1)
		d.traffic.Count(d.cfg.Hooks.Queues.First+uint16(jb.qi), matchers.Hook(jb.hook), false, len(jb.data))
		if err := q.Verdict(jb.id, nfRepeat, out.Mark|mask, true); err != nil {
			d.cnt.verdictErrs.Add(1)
			d.log.Debug("verdict not taken", "id", jb.id, "err", err)
		}
		d.observeLatency(jb)
		return
	}
	v := nfAccept
	if out.Verdict == matchers.Drop {
		v = nfDrop
		d.cnt.dropped.Add(1)
	} else {
		d.cnt.accepted.Add(1)
	}
	d.traffic.Count(d.cfg.Hooks.Queues.First+uint16(jb.qi), matchers.Hook(jb.hook), v == nfDrop, len(jb.data))
	var err error
	if out.MarkChanged {
		d.cnt.marked.Add(1)
		err = q.Verdict(jb.id, v, out.Mark, true)
	} else {
		err = q.Verdict(jb.id, v, 0, false)
	}
	if err != nil {
		d.cnt.verdictErrs.Add(1)
		d.log.Debug("verdict not taken", "id", jb.id, "err", err)
	}
	d.observeLatency(jb)
}

// sendReject sends the reply the kernel's REJECT would send, before the
// packet is dropped (the kernel's order). The first failure is logged.
func (d *Daemon) sendReject(w *worker, jb *job, ev *matchers.Event, mark uint32) {
	r := d.rej.Load()
	if out := r.reject(&w.rs, jb.data, ev.Reject, matchers.Hook(jb.hook), mark, jb.skbInfo); out == RejectFailed &&
		d.rejectFailLog.CompareAndSwap(false, true) {
		var err error
		if p := r.lastErr.Load(); p != nil {
			err = *p
		}
		d.log.Warn("REJECT reply not sent (the packet is dropped; later failures are only counted)",
			"chain", ev.Chain, "rule", ev.Rule, "with", ev.Reject.String(), "err", err)
	}
}

func (d *Daemon) observeLatency(jb *job) {
	if !jb.arrived.IsZero() {
		d.latency.Observe(time.Since(jb.arrived).Seconds())
	}
}

// panicked counts and logs a panic while judging a packet (what says in
// which step); the packet gets the default verdict and the worker goes on.
func (d *Daemon) panicked(p any, what string, jb *job) {
	d.cnt.panics.Add(1)
	d.log.Error("panic while "+what+"; it gets the default verdict",
		"panic", p, "hook", matchers.Hook(jb.hook).String(), "verdict", d.cfg.defaultVerdict().String(),
		"stack", string(debug.Stack()))
}

// add puts a packet into j's batch (decoding it) with the rules r and
// the time now. A panic leaves the packet failed: Eval gives it the
// default verdict.
func (d *Daemon) add(j *Judge, r *Rules, jb *job, now time.Time) {
	n := j.n
	defer func() {
		if p := recover(); p != nil {
			d.panicked(p, "decoding a packet", jb)
			if j.n == n {
				j.addFailed(jb.mark) // the packet keeps its place
			}
		}
	}()
	m := Meta{Hook: matchers.Hook(jb.hook), Mark: jb.mark, Now: now}
	if m.Hook <= matchers.HookPostrouting && !r.HasHook(m.Hook) {
		j.addNoChain(jb.mark)
		return
	}
	if jb.in != 0 {
		if info, ok := d.ifaces.get(jb.in); ok {
			m.In, m.InLoopback = info.name, info.loopback
			if info.ether && jb.hasHw {
				m.HasMAC, m.InMAC, m.SrcMAC, m.HwProto = true, info.mac, jb.hw, jb.hwProto
			}
		}
	}
	if jb.out != 0 {
		if info, ok := d.ifaces.get(jb.out); ok {
			m.Out = info.name
		}
	}
	j.Add(r, jb.data, &m)
}

// track tracks j's batch in the flow table. If that panics, every tracked
// packet of the batch gets the default verdict (abandonBatch).
func (d *Daemon) track(j *Judge, now time.Time) {
	defer func() {
		if p := recover(); p != nil {
			d.cnt.panics.Add(1)
			d.log.Error("panic while tracking a batch of packets; its tracked packets get the default verdict",
				"panic", p, "packets", j.nt, "verdict", d.cfg.defaultVerdict().String(), "stack", string(debug.Stack()))
			j.abandonBatch()
		}
	}()
	j.Track(now)
}

// judge evaluates packet i of j's batch, jb; a panic anywhere in it gives
// the packet the default verdict and is logged, and the worker goes on.
func (d *Daemon) judge(j *Judge, r *Rules, i int, jb *job) (out Outcome) {
	defer func() {
		if p := recover(); p != nil {
			d.panicked(p, "judging a packet", jb)
			out = Outcome{Verdict: d.cfg.defaultVerdict(), Mark: jb.mark, Panicked: true}
			j.abandon()
		}
	}()
	out = j.Eval(r, i)
	if out.NoChain {
		d.cnt.noChain.Add(1)
	}
	if out.CtDrop {
		d.cnt.ctDrops.Add(1)
	}
	switch {
	case out.Undecodable:
		d.cnt.undecodable.Add(1)
	case out.Unsupported:
		d.cnt.unsupported.Add(1)
	}
	for i := range j.Events() {
		ev := &j.Events()[i]
		switch ev.Kind {
		case matchers.EventLog:
			d.cnt.logEvents.Add(1)
			d.sink.Log(ev)
		case matchers.EventReject:
			d.cnt.rejects.Add(1)
		}
	}
	return out
}
