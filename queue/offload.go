package queue

import (
	"net/netip"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// The connmark fast path. A flow whose fate is settled is handed to the
// kernel: its next verdict is NF_REPEAT with the offload bits in the packet
// mark, the hook chain (see HookConfig.ChainSpecs) copies them into the
// connection's mark and accepts, and from then on the chain's first rule
// accepts every packet of the connection, in both directions, without
// queueing it. (The kernel's nfqueue conntrack glue, which would let the
// verdict set the connection mark directly, is an optional kernel feature;
// the repeat works on every kernel.)
//
// "Settled" is an inspection depth the user chooses: a flow is offloaded
// once qtables has accepted OffloadAfter of its packets, at least one in
// each direction, and none of them had its mark changed by the rules or
// raised a LOG or REJECT event (offloading would silently stop those for
// the rest of the flow). A dropped packet never offloads its flow.

// flowKey is a canonical 5-tuple: the lower (address, port) end first.
type flowKey struct {
	lo, hi         netip.Addr
	loPort, hiPort uint16
	proto          uint8
}

// flowState is what a worker remembers of a flow it has not offloaded.
type flowState struct {
	packets uint32
	dirs    uint8 // bit 0: seen lo->hi, bit 1: seen hi->lo
	tainted bool
	last    int64 // unix seconds of the last packet
}

// flowTable is one worker's flows. Every packet of a flow, both directions,
// goes to the same worker (FlowHash), so the table needs no lock.
type flowTable struct {
	m     map[flowKey]flowState
	after uint32
	seen  uint32 // packets since the last sweep
}

// flowIdle is how long a flow may be silent before it is forgotten.
const flowIdle = 120 // seconds

// flowSweepEvery is the number of packets between sweeps of idle flows.
const flowSweepEvery = 8192

func newFlowTable(after int) *flowTable {
	return &flowTable{m: make(map[flowKey]flowState), after: uint32(after)}
}

func keyOf(v *packet.View) (flowKey, uint8) {
	k := flowKey{lo: v.Src, hi: v.Dst, proto: v.Proto}
	if v.HasPorts {
		k.loPort, k.hiPort = v.SrcPort, v.DstPort
	}
	if c := k.hi.Compare(k.lo); c < 0 || (c == 0 && k.hiPort < k.loPort) {
		k.lo, k.hi, k.loPort, k.hiPort = k.hi, k.lo, k.hiPort, k.loPort
		return k, 2
	}
	return k, 1
}

// observe records a judged packet and reports whether its verdict should
// offload the flow. tainted says that judging this packet changed its
// mark or raised an event.
func (t *flowTable) observe(v *packet.View, verdict matchers.Verdict, tainted bool, now int64) bool {
	t.seen++
	if t.seen >= flowSweepEvery {
		t.sweep(now)
	}
	if verdict != matchers.Accept {
		return false
	}
	k, dir := keyOf(v)
	st := t.m[k]
	st.packets++
	st.dirs |= dir
	st.tainted = st.tainted || tainted
	st.last = now
	if !st.tainted && st.dirs == 3 && st.packets >= t.after {
		delete(t.m, k)
		return true
	}
	t.m[k] = st
	return false
}

// sweep forgets flows idle for flowIdle seconds.
func (t *flowTable) sweep(now int64) {
	t.seen = 0
	for k, st := range t.m {
		if now-st.last > flowIdle {
			delete(t.m, k)
		}
	}
}
