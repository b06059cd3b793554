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
	// Raw is the captured frame (link layer included) as read.
	Raw []byte
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
	Packets  int            // frames read
	Evaluted int            // frames evaluated
	Skipped  map[string]int // by reason
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
		if hook == matchers.HookForward {
			v.DecTTL() // the kernel decrements before the FORWARD hook
		}
		c.Pkt, c.Hook, c.Table = &v, hook, table
		c.In, c.Out, c.Now = o.In, o.Out, v.Timestamp
		var tr Tracer
		if o.Trace != nil {
			tr = o.Trace(frame)
		}
		out.Result = tp.Eval(&c, tr)
		stats.Evaluted++
		if err := fn(&out); err != nil {
			return stats, err
		}
	}
}
