package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/queue"
)

// hookFlags are the options shared by `run` and `hooks install`.
type hookFlags struct {
	hooks       []string
	queues      string
	failClosed  bool
	cpuFanout   bool
	offloadMask string
}

func (f *hookFlags) register(c *cobra.Command) {
	c.Flags().StringArrayVar(&f.hooks, "hook", nil, "hook to filter: PREROUTING, INPUT, FORWARD, OUTPUT or POSTROUTING (repeatable)")
	c.Flags().StringVar(&f.queues, "queues", "0", "NFQUEUE numbers to use: N or N-M (one reader per queue, kernel-side --queue-balance)")
	c.Flags().BoolVar(&f.failClosed, "fail-closed", false, "install the NFQUEUE rules without --queue-bypass: while no daemon reads the queues the kernel drops the hooked traffic")
	c.Flags().BoolVar(&f.cpuFanout, "queue-cpu-fanout", false, "choose the queue by CPU instead of by flow hash (--queue-cpu-fanout; needs several queues)")
	c.Flags().StringVar(&f.offloadMask, "offload-mask", "0", "connmark bits of the kernel fast path, e.g. 0x40000000 (0: off): connections with these bits are accepted by the kernel without queueing")
}

func (f *hookFlags) config() (queue.HookConfig, error) {
	cfg := queue.HookConfig{Bypass: !f.failClosed, CPUFanout: f.cpuFanout}
	mask, err := strconv.ParseUint(f.offloadMask, 0, 32)
	if err != nil {
		return cfg, fmt.Errorf("--offload-mask %q: not a 32-bit number", f.offloadMask)
	}
	cfg.OffloadMask = uint32(mask)
	if cfg.Queues, err = queue.ParseQueueRange(f.queues); err != nil {
		return cfg, err
	}
	for _, name := range f.hooks {
		for _, n := range strings.Split(name, ",") {
			h, err := queue.ParseHook(n)
			if err != nil {
				return cfg, err
			}
			cfg.Hooks = append(cfg.Hooks, h)
		}
	}
	return cfg, cfg.Validate()
}

func newRunCmd() *cobra.Command {
	var (
		hf           hookFlags
		rules        string
		workers      int
		queueLen     uint32
		sockBuf      int
		failOpen     bool
		defVerdict   string
		logFile      string
		logTo        string
		syslogSocket string
		syslogTag    string
		logRate      float64
		logBurst     int
		countersFile string
		statsFile    string
		debug        bool
		offloadAfter int
		metricsAddr  string
		noCt         bool
		ctMax        int
		ctFollow     bool
		controlSock  string
	)
	c := &cobra.Command{
		Use:   "run --rules RULES --hook HOOK [--hook HOOK ...] [--queues N-M]",
		Short: "Filter live traffic: hook NFQUEUE into the kernel and judge every packet with the rules",
		Long: `run is the live filter. It binds one NFQUEUE reader per queue, installs a
dedicated chain per hook (QTABLES-INPUT, QTABLES-FORWARD, ... in filter;
QTABLES-PREROUTING and QTABLES-POSTROUTING in mangle) jumped to from the
built-in chain, and judges every queued packet with the rules: at each hook,
the rules' tables with a chain of that name, mangle before filter, as the
kernel runs them. The verdict is ACCEPT or DROP, with the packet mark when
the rules changed it. REJECT sends what the kernel's REJECT would (a TCP RST
or an ICMP destination unreachable of the --reject-with code, never for
non-first fragments, RSTs, ICMP errors or broadcasts, ICMP rate-limited as
the kernel's icmp_ratelimit) from a raw socket in the daemon's namespace,
then drops.

Safety: the NFQUEUE rules carry --queue-bypass unless --fail-closed is
given, so while no daemon reads the queues (stopped, crashed, killed) the
kernel lets traffic through unfiltered instead of dropping it. The hooks are
removed on every exit (SIGINT, SIGTERM, a fatal error); hooks left by a run
that was killed (kill -9) are found and replaced at the next start. One
daemon runs per network namespace: run it inside the namespace to filter,
e.g. ip netns exec NS qtables run ...

Signals: SIGHUP re-reads the rules file (a file that fails to load leaves
the running rules in force and the error is logged; no packet is lost, and
rules whose text did not change keep their counters); SIGUSR1 writes the
--counters-file and --stats-file; SIGINT and SIGTERM stop the daemon.

Fast path (--offload-mask M): the hook chains accept connections whose
connmark has the bits M before queueing. Once qtables has accepted
--offload-after packets of a flow, at least one in each direction, and none
of them was marked or logged by the rules, it hands the flow to the kernel:
the verdict sets the bits in the connection's mark, and later packets of the
connection never reach the queue. The rules' later decisions for that flow
are then not applied: choose --offload-after as the inspection depth your
rules need. M must be bits no one else uses in the packet or connection mark.

Outputs: LOG events are the kernel's lines (PREFIX IN=... OUT=... MAC=...
SRC=... DST=... LEN=...), rate-limited (--log-rate events per second,
--log-burst; the excess is counted as log_dropped). --log-to picks where
they go: file (--log-file), stdout, json (one JSON object per line: time,
level, chain, rule, prefix, the line's fields and flags, and the line), or
syslog: a datagram per event to the local syslog socket (--syslog-socket,
default /dev/log), facility kern at the rule's --log-level, so that an
rsyslog rule such as "kern.warning /var/log/iptables.log" files them with
the kernel's own. The daemon's own messages go to stderr. On exit --counters-file gets the rules with their
counters (iptables-save -c format) and --stats-file the daemon's statistics
as JSON: received, accepted, dropped, marked, panics, reject_events,
reject_replies (by outcome: sent, or why none was sent), log_events, log_written, log_dropped, verdict_errors, enobufs, and the
kernel's per-queue counters from /proc/net/netfilter/nfnetlink_queue
(waiting, queue_dropped, user_dropped).

Metrics: Prometheus at --metrics-addr (loopback by default): packets
received, verdicts by verdict, marks, panics, offloaded flows, LOG lines
written and dropped, ENOBUFS, kernel queue drops per queue, a verdict
latency histogram, and every rule's packet and byte counters.

Flow state: every queued packet is tracked in qtables' own connection table
(--ct-max entries, the kernel's timeouts), in the kernel's order: tracked
before the rules at the first hooked hook on its path, confirmed when
accepted, forgotten when dropped, so -m state, -m conntrack, connmark,
connlimit, connbytes and CONNMARK work on live traffic. With
--ct-follow-kernel (the default) a flow the kernel's conntrack destroys is
expired in qtables' table too. qtables ct list prints the table.

Control: the daemon listens on a unix socket (--control-socket, mode 0600
in a 0700 directory; default /run/qtables/<netns>.sock, named after the
namespace the daemon runs in since a unix socket path does not belong to a
network namespace) through which "qtables ctl [--control SOCK] ..." runs
iptables commands (-L, -S, -A, -I, -D, -R, -N, -E, -F, -X, -P, -Z, -C)
against the running rules, swapped in atomically, and save, restore,
reload and ct list [--kernel].`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hooks, err := hf.config()
			if err != nil {
				return err
			}
			var defDrop bool
			switch strings.ToLower(defVerdict) {
			case "accept":
			case "drop":
				defDrop = true
			default:
				return fmt.Errorf("--default-verdict must be accept or drop, not %q", defVerdict)
			}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			logW, closeLog, err := logWriter(logTo, logFile, syslogSocket, syslogTag, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			defer closeLog()
			d, err := queue.New(queue.Config{
				RulesPath: rules, Hooks: hooks, Workers: workers, QueueLen: queueLen, SockBuf: sockBuf,
				FailOpen: failOpen, DefaultDrop: defDrop, LogWriter: logW, LogRate: logRate, LogBurst: logBurst,
				CountersFile: countersFile, StatsFile: statsFile, Logger: logger, OffloadAfter: offloadAfter,
				MetricsAddr: metricsAddr, NoConntrack: noCt, CtMax: ctMax, CtFollowKernel: ctFollow,
				ControlSocket: controlSock,
			})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1)
			defer signal.Stop(sigs)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case s := <-sigs:
						switch s {
						case syscall.SIGHUP:
							_ = d.Reload() // logged; the running rules stay on error
						case syscall.SIGUSR1:
							if err := d.WriteFiles(); err != nil {
								logger.Error("writing counters/stats files", "err", err)
							}
						}
					}
				}
			}()
			if err := d.Run(ctx); err != nil {
				return err
			}
			if st := d.Stats(); st.Panics > 0 || st.LogDropped > 0 || st.ENOBUFS > 0 || kernelDrops(st) > 0 {
				logger.Warn("losses during the run", "panics", st.Panics, "log_dropped", st.LogDropped,
					"enobufs", st.ENOBUFS, "kernel_drops", kernelDrops(st))
			}
			return nil
		},
	}
	hf.register(c)
	fl := c.Flags()
	fl.StringVar(&rules, "rules", "", "rules file (iptables-save format)")
	fl.IntVar(&workers, "workers", 0, "judging workers: 0 judges in each queue's reader, in order, with batched verdicts (fastest with one queue per core); N hands packets to N workers by flow")
	fl.Uint32Var(&queueLen, "queue-len", 1024, "kernel queue length in packets")
	fl.IntVar(&sockBuf, "sock-buf", 4<<20, "netlink receive buffer in bytes")
	fl.BoolVar(&failOpen, "fail-open", false, "set the queue's fail-open flag: a full queue accepts packets instead of dropping them")
	fl.StringVar(&defVerdict, "default-verdict", "accept", "verdict for packets that cannot be judged (a panic, an undecodable packet): accept or drop")
	fl.StringVar(&logTo, "log-to", "", "where LOG events go: file (--log-file), stdout, json (JSON lines to --log-file or stdout) or syslog (--syslog-socket, facility kern at the rule's --log-level); default file with --log-file, else stdout")
	fl.StringVar(&logFile, "log-file", "-", "file for LOG lines (- for stdout)")
	fl.StringVar(&syslogSocket, "syslog-socket", "/dev/log", "the local syslog socket for --log-to syslog")
	fl.StringVar(&syslogTag, "syslog-tag", "qtables", "the tag of syslog messages")
	fl.Float64Var(&logRate, "log-rate", 100, "LOG lines per second at most (excess lines are counted as dropped)")
	fl.IntVar(&logBurst, "log-burst", 200, "LOG lines that may be written at once above --log-rate")
	fl.StringVar(&countersFile, "counters-file", "", "write the rules with counters (iptables-save -c format) here on exit and on SIGUSR1")
	fl.StringVar(&statsFile, "stats-file", "", "write the daemon's statistics (JSON) here on exit and on SIGUSR1")
	fl.IntVar(&offloadAfter, "offload-after", 4, "with --offload-mask: hand a flow to the kernel after this many accepted packets (at least one each way, none marked or logged by the rules)")
	fl.StringVar(&metricsAddr, "metrics-addr", "127.0.0.1:9617", "serve Prometheus metrics at http://ADDR/metrics in the daemon's namespace (empty: off)")
	fl.BoolVar(&noCt, "no-conntrack", false, "do not track flows: the stateful matches (state, conntrack, connmark, connlimit, connbytes) then see INVALID")
	fl.IntVar(&ctMax, "ct-max", 262144, "size of qtables' flow table (nf_conntrack_max); beyond it unassured flows are evicted, then new ones dropped")
	fl.BoolVar(&ctFollow, "ct-follow-kernel", true, "expire a flow when the kernel's conntrack destroys it (ctnetlink destroy events)")
	fl.StringVar(&controlSock, "control-socket", "", "unix socket (mode 0600) for live rule management with qtables ctl; default /run/qtables/<netns>.sock, \"none\": off")
	fl.BoolVar(&debug, "debug", false, "log debug messages")
	_ = c.MarkFlagRequired("rules")
	_ = c.MarkFlagRequired("hook")
	return c
}

// logWriter opens the LOG output --log-to names.
func logWriter(to, file, sock, tag string, stdout io.Writer) (queue.LogWriter, func(), error) {
	openFile := func() (io.Writer, func(), error) {
		if file == "" || file == "-" {
			return stdout, func() {}, nil
		}
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("--log-file: %w", err)
		}
		return f, func() { f.Close() }, nil
	}
	switch strings.ToLower(to) {
	case "":
		w, c, err := openFile()
		if err != nil {
			return nil, nil, err
		}
		return queue.PlainLog(w), c, nil
	case "file":
		if file == "" || file == "-" {
			return nil, nil, fmt.Errorf("--log-to file needs --log-file")
		}
		w, c, err := openFile()
		if err != nil {
			return nil, nil, err
		}
		return queue.PlainLog(w), c, nil
	case "stdout":
		return queue.PlainLog(stdout), func() {}, nil
	case "json":
		w, c, err := openFile()
		if err != nil {
			return nil, nil, err
		}
		return queue.JSONLog(w), c, nil
	case "syslog":
		if sock == "" {
			return nil, nil, fmt.Errorf("--log-to syslog needs --syslog-socket")
		}
		return queue.SyslogLog(sock, tag), func() {}, nil
	}
	return nil, nil, fmt.Errorf("--log-to must be file, stdout, json or syslog, not %q", to)
}

func kernelDrops(st queue.Stats) uint64 {
	var n uint64
	for _, q := range st.Kernel {
		n += uint64(q.QueueDropped) + uint64(q.UserDropped)
	}
	return n
}

// hookNames lists hooks for messages.
func hookNames(hs []matchers.Hook) string {
	var b strings.Builder
	for i, h := range hs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(h.String())
	}
	return b.String()
}
