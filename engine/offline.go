package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// Offline configures the evaluation of a capture file, the way
// `qtables test` runs it: every packet enters one table at one built-in
// chain, as if it arrived on In and left on Out.
//
// Every evaluated packet is also tracked in a connection table, driven by
// the capture's timestamps, in the kernel's order: Track before the rules
// (conntrack runs at PREROUTING or OUTPUT, before every table but raw),
// Confirm after an ACCEPT (or a QUEUE: the queue reader is assumed to
// accept), Discard after a DROP, so that a dropped first packet leaves the
// next one NEW. A raw-table chain runs before conntrack: its packets are
// evaluated without a connection and tracked after an ACCEPT. Packets
// with a TTL too low to be forwarded are tracked and discarded (the
// kernel tracks them at PREROUTING, then ip_forward drops them); other
// skipped packets are not tracked.
type Offline struct {
	Table string // "filter" when empty
	Chain string // built-in chain name, e.g. "FORWARD"
	In    string
	Out   string
	// InMap and OutMap choose a packet's interfaces by address: the input
	// interface by the source address, the output interface by the
	// destination (as a routing table would), the longest prefix winning;
	// packets no prefix holds use In and Out. They let one capture hold
	// both directions of the connections through a router.
	InMap, OutMap []PrefixIface
	// Conntrack is the connection table packets are tracked in; nil means
	// a new table configured by CtConfig for each Run. A caller passes its
	// own to read the table afterwards (qtables test --flows).
	Conntrack *conntrack.Table
	CtConfig  conntrack.Config
	// Trace, when non-nil, returns the tracer for a frame (nil: no trace).
	Trace func(frame int) Tracer
}

// PrefixIface maps the addresses of Prefix to interface Iface.
type PrefixIface struct {
	Prefix netip.Prefix
	Iface  string
}

// ParsePrefixIface parses "CIDR=IFACE" (an address alone is a /32).
func ParsePrefixIface(s string) (PrefixIface, error) {
	cidr, iface, ok := strings.Cut(s, "=")
	if !ok || iface == "" {
		return PrefixIface{}, fmt.Errorf("%q: CIDR=INTERFACE expected", s)
	}
	if _, err := parseIface(iface); err != nil {
		return PrefixIface{}, fmt.Errorf("%q: %w", s, err)
	}
	var p netip.Prefix
	var err error
	if strings.Contains(cidr, "/") {
		p, err = netip.ParsePrefix(cidr)
	} else {
		var a netip.Addr
		if a, err = netip.ParseAddr(cidr); err == nil {
			p = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil || !p.Addr().Is4() {
		return PrefixIface{}, fmt.Errorf("%q: an IPv4 address or prefix expected before '='", s)
	}
	return PrefixIface{Prefix: p.Masked(), Iface: iface}, nil
}

// ifaceFor returns the interface of the longest prefix of m holding a,
// else def.
func ifaceFor(m []PrefixIface, a netip.Addr, def string) string {
	best := -1
	for _, pi := range m {
		if pi.Prefix.Bits() > best && pi.Prefix.Contains(a) {
			best, def = pi.Prefix.Bits(), pi.Iface
		}
	}
	return def
}

// Verdict is the outcome of one captured packet.
type Verdict struct {
	Frame int
	View  *packet.View
	// Raw is the captured frame (link layer included) exactly as read; View
	// describes the packet as the hook saw it (at FORWARD, TTL one less).
	Raw []byte
	// WireLen is the frame's original length on the wire; LinkType the
	// capture's link type for Raw.
	WireLen  int
	LinkType uint16
	// Skipped is set when the packet never reaches an iptables hook in
	// the kernel (not IPv4, malformed, truncated); Result is then zero.
	Skipped bool
	// SkipReason says why ("non-ip", "malformed", "truncated",
	// "ttl-expired", "conntrack-full": dropped by connection tracking
	// because the table is full).
	SkipReason string
	Result     Result
	Ctx        *matchers.Context
}

// OfflineStats summarises a capture run.
type OfflineStats struct {
	Packets   int            // frames read
	Evaluated int            // frames evaluated
	Skipped   map[string]int // by reason
}

// Run evaluates every packet of the capture at path in order, calling fn
// for each (fn's arguments are valid only during the call).
func (o *Offline) Run(ctx context.Context, prog *Program, path string, fn func(*Verdict) error) (OfflineStats, error) {
	stats := OfflineStats{Skipped: map[string]int{}}
	table := o.Table
	if table == "" {
		table = "filter"
	}
	tp := prog.Table(table)
	if tp == nil {
		return stats, fmt.Errorf("the rules define no %s table", table)
	}
	hook, ok := matchers.HookByName(o.Chain)
	if !ok || !tp.HasHook(hook) {
		return stats, fmt.Errorf("%q is not a built-in chain of table %s", o.Chain, table)
	}
	if hook == matchers.HookOutput || hook == matchers.HookPostrouting {
		if o.In != "" || len(o.InMap) > 0 {
			return stats, fmt.Errorf("packets at %s have no input interface (--in-interface given)", o.Chain)
		}
	}
	if (hook == matchers.HookPrerouting || hook == matchers.HookInput) && (o.Out != "" || len(o.OutMap) > 0) {
		return stats, fmt.Errorf("packets at %s have no output interface (--out-interface given)", o.Chain)
	}
	ct := o.Conntrack
	if ct == nil {
		ct = conntrack.New(o.CtConfig)
		defer ct.Close() // a large table's memory is mapped outside the Go heap
	}
	// The raw table runs before conntrack; every other table after it.
	trackFirst := table != "raw"
	cr, err := packet.OpenCapture(path)
	if err != nil {
		return stats, err
	}
	defer cr.Close()
	var v packet.View
	var c matchers.Context
	var res conntrack.Result
	var lastSweep time.Time
	out := Verdict{View: &v, Ctx: &c}
	for {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		frame, err := cr.Next(&v)
		if errors.Is(err, io.EOF) {
			return stats, nil
		}
		if err != nil {
			return stats, err
		}
		stats.Packets++
		out.Frame, out.Raw, out.Skipped, out.SkipReason, out.Result = frame, cr.Data(), false, "", Result{}
		out.WireLen, out.LinkType = cr.WireLen(), cr.LinkType()
		c.Reset()
		switch {
		case v.Class != packet.ClassOK || v.Family != 4:
			out.SkipReason = v.Class.String()
		case hook == matchers.HookForward && v.TTL <= 1:
			// ip_forward drops it (and sends time-exceeded) before FORWARD.
			out.SkipReason = "ttl-expired"
		}
		if out.SkipReason == "ttl-expired" {
			// Tracked at PREROUTING, then dropped by ip_forward.
			ct.TrackInto(&res, &v, v.Timestamp)
			res.Discard()
		}
		if out.SkipReason == "" && trackFirst {
			// The periodic garbage collection, on the capture's clock.
			if ts := v.Timestamp; ts.Sub(lastSweep) >= conntrack.DefaultSweepInterval || ts.Before(lastSweep) {
				ct.Sweep(ts)
				lastSweep = ts
			}
			ct.TrackInto(&res, &v, v.Timestamp)
			if res.Drop {
				out.SkipReason = "conntrack-full"
			}
		}
		if out.SkipReason != "" {
			stats.Skipped[out.SkipReason]++
			out.Skipped = true
			if err := fn(&out); err != nil {
				return stats, err
			}
			continue
		}
		// The kernel decrements the TTL before the FORWARD hook. DecTTL
		// edits the frame in place; the original bytes are put back after
		// evaluation so that Raw stays the frame as captured.
		var saved [3]byte
		forward := hook == matchers.HookForward && len(v.Network) >= 12
		if forward {
			saved = [3]byte{v.Network[8], v.Network[10], v.Network[11]}
			v.DecTTL()
		}
		c.Pkt, c.Hook, c.Table = &v, hook, table
		c.In, c.Out, c.Now = o.In, o.Out, v.Timestamp
		if len(o.InMap) > 0 {
			c.In = ifaceFor(o.InMap, v.Src, o.In)
		}
		if len(o.OutMap) > 0 {
			c.Out = ifaceFor(o.OutMap, v.Dst, o.Out)
		}
		if trackFirst {
			c.SetConntrack(ct, &res)
		}
		var tr Tracer
		if o.Trace != nil {
			tr = o.Trace(frame)
		}
		out.Result = tp.Eval(&c, tr)
		if forward {
			v.Network[8], v.Network[10], v.Network[11] = saved[0], saved[1], saved[2]
		}
		accepted := false
		switch out.Result.Verdict.Base() {
		case matchers.Accept, matchers.Queue:
			accepted = true
		}
		switch {
		case !trackFirst && accepted:
			ct.TrackInto(&res, &v, v.Timestamp)
			res.Confirm(v.Timestamp)
		case accepted:
			// A lost clash (two first packets of one connection) drops
			// the packet in the kernel; offline, packets come one at a
			// time and confirm before the next is tracked.
			res.Confirm(v.Timestamp)
		case trackFirst:
			res.Discard()
		}
		stats.Evaluated++
		if err := fn(&out); err != nil {
			return stats, err
		}
	}
}
