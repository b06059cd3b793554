package engine

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// Offline configures the evaluation of a capture file, the way
// `qtables test` runs it: every packet enters one table at one built-in
// chain, as if it arrived on In and left on Out.
type Offline struct {
	Table string // "filter" when empty
	Chain string // built-in chain name, e.g. "FORWARD"
	In    string
	Out   string
	// Trace, when non-nil, returns the tracer for a frame (nil: no trace).
	Trace func(frame int) Tracer
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
	// SkipReason says why ("non-ip", "malformed", "truncated", "ttl-expired").
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
		if o.In != "" {
			return stats, fmt.Errorf("packets at %s have no input interface (--in-interface given)", o.Chain)
		}
	}
	if (hook == matchers.HookPrerouting || hook == matchers.HookInput) && o.Out != "" {
		return stats, fmt.Errorf("packets at %s have no output interface (--out-interface given)", o.Chain)
	}
	cr, err := packet.OpenCapture(path)
	if err != nil {
		return stats, err
	}
	defer cr.Close()
	var v packet.View
	var c matchers.Context
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
		var tr Tracer
		if o.Trace != nil {
			tr = o.Trace(frame)
		}
		out.Result = tp.Eval(&c, tr)
		if forward {
			v.Network[8], v.Network[10], v.Network[11] = saved[0], saved[1], saved[2]
		}
		stats.Evaluated++
		if err := fn(&out); err != nil {
			return stats, err
		}
	}
}
