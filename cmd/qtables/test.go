package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

type testOptions struct {
	rules    string
	table    string
	chain    string
	in, out  string
	counters bool
	flows    bool

	inMap, outMap []string
	ctMax         int
	ctTimeouts    []string
	ctNoPickup    bool
	ctLiberal     bool
	ctChecksum    bool

	verdicts      bool
	trace         []string
	writeAccepted string
	writeDropped  string
	expect        string
	junit         string
	quiet         bool
}

const testLong = `test runs each packet of CAPTURE (pcap or pcapng, optionally gzipped), in
order, through the built-in chain CHAIN of the table, as if it arrived on
--in-interface and left on --out-interface, with time taken from the
capture. Packets look as the kernel's hook sees them (at FORWARD the TTL is
already decremented, and packets with TTL 1 or less never reach FORWARD).
Counters start at zero. Packets that never reach an iptables hook (not
IPv4, malformed, truncated by the snap length) are skipped.

Connection tracking: every evaluated packet is tracked in a connection
table as the kernel's conntrack would track it (state, timeouts, counters,
marks), on the capture's clock: before the rules (after them for the raw
table, which runs before conntrack), the connection being confirmed when
the verdict is ACCEPT or QUEUE and forgotten when it is DROP, so a dropped
first packet leaves the next one NEW. This is what -m state, -m conntrack,
connlimit, connmark, connbytes and CONNMARK see. A capture may hold both
directions of the connections through a router; give each packet its
interfaces with:
  --in-interface-map CIDR=IF   packets whose source address is in CIDR
                     arrive on IF (repeatable; the longest prefix wins;
                     others arrive on --in-interface)
  --out-interface-map CIDR=IF  packets whose destination is in CIDR leave
                     on IF (repeatable; others leave on --out-interface)
Table options (kernel defaults otherwise):
  --ct-max N         nf_conntrack_max (262144; -1: no limit). A new
                     connection beyond it evicts an unassured one or is
                     dropped before the rules (skipped as conntrack-full).
  --ct-timeout NAME=SECONDS  a nf_conntrack sysctl timeout, NAME one of
                     tcp_timeout_{syn_sent,syn_recv,established,fin_wait,
                     close_wait,last_ack,time_wait,close,max_retrans,
                     unacknowledged}, udp_timeout, udp_timeout_stream,
                     icmp_timeout, generic_timeout (repeatable)
  --ct-no-pickup     nf_conntrack_tcp_loose=0: no mid-stream pickup
  --ct-be-liberal    nf_conntrack_tcp_be_liberal=1
  --ct-checksum      verify transport checksums (nf_conntrack_checksum=1;
                     off by default because captures taken on a sending
                     host carry checksums the NIC fills in later)

Output (stdout):
  --counters         the rule set with counters, exactly as iptables-save -c,
                     after all packets
  --flows            the connection table after all packets, as
                     "conntrack -L" lists it (with accounting), oldest
                     first, timeouts as at the last packet's time
  --verdicts         one JSON object per packet, in capture order:
      frame          frame number, from 1
      time           capture timestamp, RFC 3339 with nanoseconds, UTC
      src, dst       IPv4 addresses; proto: "tcp", "udp", "icmp" or a number
      sport, dport   TCP/UDP ports (only when present)
      icmp_type, icmp_code  (ICMP only)
      skipped        why the packet was not evaluated: non-ip, truncated,
                     malformed, unsupported-link, ttl-expired (the fields
                     below are then absent)
      verdict        "ACCEPT", "DROP" or "QUEUE N"; queue: N; bypass: true
                     with --queue-bypass; hotdrop: true when a match dropped
                     a malformed packet
      mark, ctmark   marks after the traversal, hex strings ("0x1")
      rule           the deciding rule, "CHAIN:N" or "CHAIN:policy"
      rule_text      its canonical text, "-A CHAIN ..." or "-P CHAIN DROP"
      events         [{type:"LOG", rule, level, text} | {type:"REJECT",
                     rule, with}] in order (REJECT's verdict is DROP)
      trace          the TRACE lines, for frames given to --trace
  --trace FRAMES     for the frames given (N, N-M, comma lists, repeatable,
                     or "all"), every rule the packet is compared with:
      TRACE: frame 3 2024-05-01T10:00:00Z IN=eth0 OUT=eth1 SRC=... DPT=22
      TRACE: filter:FORWARD:rule:1 -A FORWARD -p udp -j DROP -> no match (-p)
      TRACE: filter:FORWARD:rule:2 -A FORWARD -j LOGDROP -> match
      TRACE: filter:LOGDROP:return:3
      TRACE: filter:FORWARD:policy:3 -P FORWARD DROP
      TRACE: frame 3 verdict DROP by filter:FORWARD:policy
                     "no match (X)" names the first part of the rule that did
                     not match (-s, -d, -i, -o, -p, -f, -m NAME). With
                     --verdicts the lines go into the JSON "trace" field.

Splitting (files are pcap with the capture's link type and timestamps and
the frames exactly as captured):
  --write-accepted F, --write-dropped F   packets with verdict ACCEPT, or
                     DROP (REJECT and hotdrop included). QUEUE'd packets,
                     whose fate the queue reader decides, go to neither
                     file, nor do skipped packets.

Expectations (--expect FILE), one per line, # starts a comment:
  frame 3 DROP
  frame 4 ACCEPT mark 0x1
  frame 5-7,9 ACCEPT rule FORWARD:2
  frame 8 REJECT tcp-reset
  frame 10 SKIPPED non-ip
  flow tcp 10.0.0.1:1234 -> 10.0.0.2:80 ACCEPT
  flow tcp 10.0.0.1 <-> 10.0.0.2:22 ACCEPT
  flow udp 10.0.0.0/24 -> 192.0.2.53:53 DROP
  rule filter FORWARD 2 packets 3
  rule filter FORWARD 2 packets 3 bytes 180
  policy filter FORWARD packets 1
A frame or flow line ends in an outcome: a verdict, ACCEPT, DROP (includes
REJECT and hotdrop), REJECT [TYPE], QUEUE [N] or SKIPPED [REASON], then any
of "mark VALUE[/MASK]", "ctmark VALUE[/MASK]", "rule CHAIN:N" or
"rule CHAIN:policy". A flow is PROTO HOST[:PORT] -> HOST[:PORT]: PROTO as
for -p ("all" for any), HOST an address or prefix, PORT a number or * (the
default, any); "->" takes the packets sent as written, "<->" also those in
the other direction. A flow expectation holds when at least one evaluated
packet belongs to it and every such packet has the outcome (skipped packets
belong to no flow). "rule"/"policy" lines compare final counters. Every
expectation is checked; each failure is printed on stderr with what was
expected and what happened. --junit F writes the results as JUnit XML, one
testcase per expectation.

A summary (packets read, evaluated, skipped by reason, verdict counts,
expectations) goes to stderr unless --quiet.

Exit status: 0 success, 1 an expectation failed or the rules or capture
could not be read, 2 invalid options or an invalid expectations file.`

func newTestCmd() *cobra.Command {
	var o testOptions
	c := &cobra.Command{
		Use:   "test --rules RULES --chain CHAIN [flags] CAPTURE",
		Short: "Evaluate every packet of a pcap/pcapng capture against a rule set",
		Long:  testLong,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError(cmd, fmt.Errorf("one capture file expected, %d given", len(args)))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case o.rules == "":
				return usageError(cmd, errors.New("--rules is required"))
			case o.chain == "":
				return usageError(cmd, errors.New("--chain is required"))
			}
			return runTest(cmd, &o, args[0])
		},
	}
	c.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError(cmd, err) })
	f := c.Flags()
	f.StringVar(&o.rules, "rules", "", "rules file (iptables-save format)")
	f.StringVarP(&o.table, "table", "t", "filter", "table to traverse")
	f.StringVar(&o.chain, "chain", "", "built-in chain the packets enter (INPUT, FORWARD, OUTPUT, ...)")
	f.StringVarP(&o.in, "in-interface", "i", "", "input interface name the packets arrive on")
	f.StringVarP(&o.out, "out-interface", "o", "", "output interface name the packets leave on")
	f.BoolVar(&o.counters, "counters", false, "print the rule set with counters, as iptables-save -c")
	f.BoolVar(&o.flows, "flows", false, "print the connection table at the end, as conntrack -L")
	f.StringArrayVar(&o.inMap, "in-interface-map", nil, "packets from `CIDR=IF` arrive on IF (repeatable)")
	f.StringArrayVar(&o.outMap, "out-interface-map", nil, "packets to `CIDR=IF` leave on IF (repeatable)")
	f.IntVar(&o.ctMax, "ct-max", 0, "connection table size, nf_conntrack_max (0: 262144, -1: unlimited)")
	f.StringArrayVar(&o.ctTimeouts, "ct-timeout", nil, "conntrack timeout `NAME=SECONDS` (repeatable)")
	f.BoolVar(&o.ctNoPickup, "ct-no-pickup", false, "do not pick up TCP connections mid-stream (tcp_loose=0)")
	f.BoolVar(&o.ctLiberal, "ct-be-liberal", false, "accept out-of-window TCP packets (tcp_be_liberal=1)")
	f.BoolVar(&o.ctChecksum, "ct-checksum", false, "declare packets with bad transport checksums INVALID")
	f.BoolVar(&o.verdicts, "verdicts", false, "print one JSON object per packet")
	f.StringSliceVar(&o.trace, "trace", nil, "trace frames `FRAMES` (N, N-M, comma list, or all)")
	f.StringVar(&o.writeAccepted, "write-accepted", "", "write the accepted packets to pcap `FILE`")
	f.StringVar(&o.writeDropped, "write-dropped", "", "write the dropped packets to pcap `FILE`")
	f.StringVar(&o.expect, "expect", "", "check the expectations in `FILE`")
	f.StringVar(&o.junit, "junit", "", "write the expectation results as JUnit XML to `FILE`")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print no summary")
	return c
}

// usageError prints err and yields exit status 2.
func usageError(cmd *cobra.Command, err error) error {
	fmt.Fprintln(cmd.ErrOrStderr(), "qtables test:", err)
	return exitError{2}
}

func runTest(cmd *cobra.Command, o *testOptions, capture string) error {
	stderr := cmd.ErrOrStderr()
	traced, err := parseFrameSet(o.trace)
	if err != nil {
		return usageError(cmd, fmt.Errorf("--trace: %w", err))
	}
	if o.junit != "" && o.expect == "" {
		return usageError(cmd, errors.New("--junit needs --expect"))
	}
	for _, p := range []string{o.writeAccepted, o.writeDropped} {
		if p != "" && samePath(p, capture) {
			return usageError(cmd, fmt.Errorf("%s would overwrite the capture being read", p))
		}
	}
	if o.writeAccepted != "" && samePath(o.writeAccepted, o.writeDropped) {
		return usageError(cmd, errors.New("--write-accepted and --write-dropped name the same file"))
	}

	rs, err := engine.LoadFile(o.rules)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError{1}
	}
	rs.ZeroCounters()
	prog, err := engine.Compile(rs)
	if err != nil {
		return err
	}
	table := o.table
	if table == "" {
		table = "filter"
	}
	rep, err := engine.NewReport(rs, table)
	if err != nil {
		return usageError(cmd, fmt.Errorf("--table %s: %w", table, err))
	}
	if ch := rs.Table(table).Chain(o.chain); ch == nil || !ch.Builtin {
		return usageError(cmd, fmt.Errorf("--chain %s: not a built-in chain of table %s", o.chain, table))
	}
	var ex *engine.Expectations
	if o.expect != "" {
		if ex, err = engine.LoadExpectations(o.expect); err == nil {
			err = ex.Validate(rs, table)
		}
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitError{2}
		}
	}

	offline := &engine.Offline{Table: table, Chain: o.chain, In: o.in, Out: o.out}
	for _, spec := range [...]struct {
		flag string
		args []string
		dst  *[]engine.PrefixIface
	}{{"--in-interface-map", o.inMap, &offline.InMap}, {"--out-interface-map", o.outMap, &offline.OutMap}} {
		for _, a := range spec.args {
			pi, err := engine.ParsePrefixIface(a)
			if err != nil {
				return usageError(cmd, fmt.Errorf("%s: %w", spec.flag, err))
			}
			*spec.dst = append(*spec.dst, pi)
		}
	}
	ctCfg, err := o.conntrackConfig()
	if err != nil {
		return usageError(cmd, err)
	}
	offline.Conntrack = conntrack.New(ctCfg)
	defer offline.Conntrack.Close() // a large table's memory is mapped outside the Go heap

	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	stdout := bufio.NewWriter(cmd.OutOrStdout())
	defer stdout.Flush()
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)

	var split *splitter
	if o.writeAccepted != "" || o.writeDropped != "" {
		split = newSplitter(o.writeAccepted, o.writeDropped)
		defer split.abort()
	}

	var (
		steps  []string
		sum    = newSummary()
		start  = time.Now()
		tracer = func(s engine.Step) { steps = append(steps, rep.TraceStep(s)) }
		last   time.Time
	)
	if traced != nil {
		offline.Trace = func(frame int) engine.Tracer {
			if traced.has(frame) {
				return tracer
			}
			return nil
		}
	}
	_, err = offline.Run(ctx, prog, capture, func(v *engine.Verdict) error {
		sum.add(v)
		last = v.View.Timestamp
		if split != nil {
			if err := split.next(v); err != nil {
				return err
			}
		}
		if ex != nil {
			ex.Observe(v, rep)
		}
		var lines []string
		if traced.has(v.Frame) {
			lines = make([]string, 0, len(steps)+2)
			in, out := o.in, o.out
			if !v.Skipped {
				in, out = v.Ctx.In, v.Ctx.Out
			}
			lines = append(lines, engine.TraceHeader(v, in, out))
			lines = append(lines, steps...)
			lines = append(lines, rep.TraceVerdict(v))
			steps = steps[:0]
		}
		if o.verdicts {
			rec := rep.Record(v)
			rec.Trace = lines
			return enc.Encode(&rec)
		}
		for _, l := range lines {
			stdout.WriteString(l)
			stdout.WriteByte('\n')
		}
		return nil
	})
	if err != nil {
		stdout.Flush()
		return err
	}
	if split != nil {
		if err := split.close(); err != nil {
			return err
		}
	}
	if o.counters {
		if err := rs.Save(stdout, engine.SaveOptions{Counters: true, Header: true, Now: time.Now(), Table: table}); err != nil {
			return err
		}
	}
	nflows := 0
	if o.flows {
		if nflows, err = offline.Conntrack.WriteConntrackL(stdout, last); err != nil {
			return err
		}
	}
	if err := stdout.Flush(); err != nil {
		return err
	}

	failed := 0
	var results []engine.ExpectResult
	if ex != nil {
		results = ex.Results(rs)
		for _, r := range results {
			if r.Passed {
				continue
			}
			failed++
			e := r.Expectation
			fmt.Fprintf(stderr, "FAIL %s: %s\n", e.Pos, e.Text)
			for _, g := range r.Got {
				fmt.Fprintf(stderr, "    %s\n", g)
			}
		}
		if o.junit != "" {
			run := engine.JUnitRun{
				Name:    o.expect,
				Start:   start,
				Elapsed: time.Since(start),
				Properties: [][2]string{
					{"rules", o.rules}, {"capture", capture}, {"table", table}, {"chain", o.chain},
				},
			}
			if o.in != "" {
				run.Properties = append(run.Properties, [2]string{"in-interface", o.in})
			}
			if o.out != "" {
				run.Properties = append(run.Properties, [2]string{"out-interface", o.out})
			}
			if err := writeFileWith(o.junit, func(w io.Writer) error { return engine.WriteJUnit(w, run, results) }); err != nil {
				return err
			}
		}
	}
	if !o.quiet {
		sum.print(stderr)
		if o.flows {
			fmt.Fprintf(stderr, "qtables test: %d flow entries have been shown.\n", nflows)
		}
		if ex != nil {
			fmt.Fprintf(stderr, "qtables test: expectations: %d passed, %d failed\n", len(results)-failed, failed)
		}
	}
	if failed > 0 {
		return exitError{1}
	}
	return nil
}

// frameSet is the set of frames given to --trace; nil traces none.
type frameSet struct {
	all    bool
	ranges [][2]int
}

func (s *frameSet) has(frame int) bool {
	if s == nil {
		return false
	}
	if s.all {
		return true
	}
	for _, r := range s.ranges {
		if r[0] <= frame && frame <= r[1] {
			return true
		}
	}
	return false
}

// parseFrameSet parses the --trace arguments (already split at commas).
func parseFrameSet(args []string) (*frameSet, error) {
	if len(args) == 0 {
		return nil, nil
	}
	s := &frameSet{}
	for _, a := range args {
		a = strings.TrimSpace(a)
		if a == "all" {
			s.all = true
			continue
		}
		lo, hi, isRange := strings.Cut(a, "-")
		l, err1 := strconv.Atoi(lo)
		h := l
		var err2 error
		if isRange {
			h, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || l < 1 || h < l {
			return nil, fmt.Errorf("%q: frame number N, range N-M or \"all\" expected (frames count from 1)", a)
		}
		s.ranges = append(s.ranges, [2]int{l, h})
	}
	return s, nil
}

// summary counts what the run did, for the stderr summary.
type summary struct {
	packets, evaluated int
	skipped            map[string]int
	verdicts           map[matchers.Verdict]int
}

func newSummary() *summary {
	return &summary{skipped: map[string]int{}, verdicts: map[matchers.Verdict]int{}}
}

func (s *summary) add(v *engine.Verdict) {
	s.packets++
	if v.Skipped {
		s.skipped[v.SkipReason]++
		return
	}
	s.evaluated++
	s.verdicts[v.Result.Verdict&^matchers.QueueBypass]++
}

func (s *summary) print(w io.Writer) {
	nskip := 0
	var reasons []string
	for r, n := range s.skipped {
		nskip += n
		reasons = append(reasons, r+" "+strconv.Itoa(n))
	}
	sort.Strings(reasons)
	line := fmt.Sprintf("qtables test: %d packets read, %d evaluated, %d skipped", s.packets, s.evaluated, nskip)
	if len(reasons) > 0 {
		line += " (" + strings.Join(reasons, ", ") + ")"
	}
	fmt.Fprintln(w, line)
	keys := make([]matchers.Verdict, 0, len(s.verdicts))
	for k := range s.verdicts {
		keys = append(keys, k)
	}
	// ACCEPT before DROP before QUEUE n by queue number.
	order := func(v matchers.Verdict) uint64 {
		rank := uint64(3)
		switch v.Base() {
		case matchers.Accept:
			rank = 0
		case matchers.Drop:
			rank = 1
		case matchers.Queue:
			rank = 2
		}
		return rank<<32 | uint64(v>>16)
	}
	sort.Slice(keys, func(i, j int) bool { return order(keys[i]) < order(keys[j]) })
	var parts []string
	for _, k := range keys {
		parts = append(parts, strconv.Itoa(s.verdicts[k])+" "+k.String())
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	fmt.Fprintln(w, "qtables test: verdicts: "+strings.Join(parts, ", "))
}

// splitter writes the accepted and dropped packets to pcap files, as
// captured (engine.Verdict.Raw is the frame as read, before the TTL
// decrement a FORWARD evaluation sees).
type splitter struct {
	linkType uint16 // of the last frame, for files that stay empty
	acc, drp *captureOut
}

type captureOut struct {
	path     string
	w        *packet.CaptureWriter
	linkType uint16
	frames   int
}

func newSplitter(accepted, dropped string) *splitter {
	s := &splitter{linkType: packet.LinkTypeEthernet}
	if accepted != "" {
		s.acc = &captureOut{path: accepted}
	}
	if dropped != "" {
		s.drp = &captureOut{path: dropped}
	}
	return s
}

// next writes the frame of v where its verdict sends it.
func (s *splitter) next(v *engine.Verdict) error {
	s.linkType = v.LinkType
	if v.Skipped {
		return nil
	}
	var out *captureOut
	switch v.Result.Verdict.Base() {
	case matchers.Accept:
		out = s.acc
	case matchers.Drop:
		out = s.drp
	}
	if out == nil {
		return nil
	}
	return out.write(v.Frame, v.LinkType, v.View.Timestamp, v.Raw, v.WireLen)
}

func (o *captureOut) write(frame int, linkType uint16, ts time.Time, data []byte, wireLen int) error {
	if o.w == nil {
		w, err := packet.CreateCapture(o.path, linkType)
		if err != nil {
			return err
		}
		o.w, o.linkType = w, linkType
	} else if linkType != o.linkType {
		return fmt.Errorf("%s: frame %d has link type %d, the file's frames %d (a pcap file holds one link type)", o.path, frame, linkType, o.linkType)
	}
	o.frames++
	return o.w.WritePacketLen(ts, data, wireLen)
}

// close finishes both files; a file that received no frame is still
// written, empty, with the capture's link type.
func (s *splitter) close() error {
	var errs []error
	for _, o := range []*captureOut{s.acc, s.drp} {
		if o == nil {
			continue
		}
		if o.w == nil {
			w, err := packet.CreateCapture(o.path, s.linkType)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			o.w = w
		}
		errs = append(errs, o.w.Close())
		o.w = nil
	}
	return errors.Join(errs...)
}

// abort releases the files after a failed run.
func (s *splitter) abort() {
	for _, o := range []*captureOut{s.acc, s.drp} {
		if o != nil && o.w != nil {
			o.w.Close()
			o.w = nil
		}
	}
}

// samePath reports whether a and b name the same file (or the same
// not-yet-existing path).
func samePath(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(sa, sb)
	}
	return filepath.Clean(a) == filepath.Clean(b)
}

// writeFileWith writes path through fn, replacing it only on success.
func writeFileWith(path string, fn func(io.Writer) error) error {
	var b strings.Builder
	if err := fn(&b); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// ctTimeoutNames maps the --ct-timeout names (the nf_conntrack sysctls
// without their prefix) to the table's timeout fields.
var ctTimeoutNames = map[string]func(*conntrack.Timeouts) *time.Duration{
	"tcp_timeout_syn_sent":       func(t *conntrack.Timeouts) *time.Duration { return &t.TCPSynSent },
	"tcp_timeout_syn_recv":       func(t *conntrack.Timeouts) *time.Duration { return &t.TCPSynRecv },
	"tcp_timeout_established":    func(t *conntrack.Timeouts) *time.Duration { return &t.TCPEstablished },
	"tcp_timeout_fin_wait":       func(t *conntrack.Timeouts) *time.Duration { return &t.TCPFinWait },
	"tcp_timeout_close_wait":     func(t *conntrack.Timeouts) *time.Duration { return &t.TCPCloseWait },
	"tcp_timeout_last_ack":       func(t *conntrack.Timeouts) *time.Duration { return &t.TCPLastAck },
	"tcp_timeout_time_wait":      func(t *conntrack.Timeouts) *time.Duration { return &t.TCPTimeWait },
	"tcp_timeout_close":          func(t *conntrack.Timeouts) *time.Duration { return &t.TCPClose },
	"tcp_timeout_max_retrans":    func(t *conntrack.Timeouts) *time.Duration { return &t.TCPMaxRetrans },
	"tcp_timeout_unacknowledged": func(t *conntrack.Timeouts) *time.Duration { return &t.TCPUnacknowledged },
	"udp_timeout":                func(t *conntrack.Timeouts) *time.Duration { return &t.UDP },
	"udp_timeout_stream":         func(t *conntrack.Timeouts) *time.Duration { return &t.UDPStream },
	"icmp_timeout":               func(t *conntrack.Timeouts) *time.Duration { return &t.ICMP },
	"generic_timeout":            func(t *conntrack.Timeouts) *time.Duration { return &t.Generic },
}

// conntrackConfig builds the connection table's configuration from the
// --ct-* options.
func (o *testOptions) conntrackConfig() (conntrack.Config, error) {
	cfg := conntrack.Config{
		MaxEntries:   o.ctMax,
		TCPNoPickup:  o.ctNoPickup,
		TCPBeLiberal: o.ctLiberal,
		Checksum:     o.ctChecksum,
	}
	if o.ctMax < -1 {
		return cfg, fmt.Errorf("--ct-max %d: a size, 0 for the default or -1 for no limit expected", o.ctMax)
	}
	for _, a := range o.ctTimeouts {
		name, secs, ok := strings.Cut(a, "=")
		field, known := ctTimeoutNames[strings.TrimPrefix(name, "nf_conntrack_")]
		if !ok || !known {
			return cfg, fmt.Errorf("--ct-timeout %q: NAME=SECONDS expected, NAME a nf_conntrack timeout sysctl (tcp_timeout_established, udp_timeout, ...)", a)
		}
		n, err := strconv.ParseUint(secs, 10, 32)
		if err != nil || n == 0 {
			return cfg, fmt.Errorf("--ct-timeout %q: a positive number of seconds expected", a)
		}
		*field(&cfg.Timeouts) = time.Duration(n) * time.Second
	}
	return cfg, nil
}
