package queue

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// tableOrder is the order in which the kernel runs the tables qtables
// implements at a hook (NF_IP_PRI_MANGLE before NF_IP_PRI_FILTER).
var tableOrder = [...]string{"mangle", "filter"}

// Rules is a compiled rule set ready for judging: the Ruleset (whose
// counters the Program updates, and which the counters file prints) and,
// per hook, the tables that have a built-in chain there, in kernel order.
// It is immutable; a reload builds a new one.
type Rules struct {
	Set    *engine.Ruleset
	Prog   *engine.Program
	byHook [matchers.HookPostrouting + 1][]*engine.TableProgram
	// Source names where the rules came from (a file path), for messages.
	Source string
}

// CompileRules compiles rs for judging.
func CompileRules(rs *engine.Ruleset, source string) (*Rules, error) {
	prog, err := engine.Compile(rs)
	if err != nil {
		return nil, err
	}
	r := &Rules{Set: rs, Prog: prog, Source: source}
	for h := range r.byHook {
		for _, name := range tableOrder {
			if tp := prog.Table(name); tp != nil && tp.HasHook(matchers.Hook(h)) {
				r.byHook[h] = append(r.byHook[h], tp)
			}
		}
	}
	return r, nil
}

// LoadRules reads and compiles a rules file (iptables-save format).
func LoadRules(path string) (*Rules, error) {
	rs, err := engine.LoadFile(path)
	if err != nil {
		return nil, err
	}
	r, err := CompileRules(rs, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// HasHook reports whether any table of the rules has a chain at h.
func (r *Rules) HasHook(h matchers.Hook) bool {
	return h <= matchers.HookPostrouting && len(r.byHook[h]) > 0
}

// Meta is what the kernel tells about a queued packet besides its bytes.
type Meta struct {
	Hook matchers.Hook
	// In and Out are the interface names ("" where the hook has none).
	In, Out string
	// InMAC is the input device's own address (the destination of a
	// unicast frame it received); SrcMAC the frame's source address
	// (NFQA_HWADDR); HwProto the frame's ethertype. HasMAC is set when the
	// input device is Ethernet-like and the kernel sent the source address.
	InMAC, SrcMAC [6]byte
	HwProto       uint16
	HasMAC        bool
	// InLoopback is set when the input device is a loopback device, whose
	// header the kernel logs as zeros.
	InLoopback bool
	// Mark is the packet mark (skb->mark); CtMark the connection's mark,
	// valid when HasCt.
	Mark   uint32
	CtMark uint32
	HasCt  bool
	// Now is the time the rules see.
	Now time.Time
}

// Outcome is the judgement of one packet.
type Outcome struct {
	// Verdict is matchers.Accept or matchers.Drop: what the kernel is told.
	Verdict matchers.Verdict
	// Mark is the packet mark after evaluation; MarkChanged says whether
	// the rules changed it (so the verdict must carry it).
	Mark        uint32
	MarkChanged bool
	// Decided is the rule that decided, as the last table evaluated
	// reported it.
	Decided engine.Result
	// Undecodable is set when the bytes were no IPv4 datagram the rules can
	// judge; the verdict is then the default one.
	Undecodable bool
	// Unsupported is set when the rules returned a verdict other than
	// ACCEPT or DROP (QUEUE, STOLEN), replaced by the default verdict.
	Unsupported bool
	// CtDrop is set when connection tracking dropped the packet: the
	// table was full (before the rules) or a concurrent first packet of
	// the same connection was confirmed first (after them), as the
	// kernel's conntrack drops it.
	CtDrop bool
	// Panicked is set by the daemon when judging panicked and the
	// default verdict was given; NoChain when no table of the rules has a
	// chain at the packet's hook (ACCEPT, nothing evaluated).
	Panicked bool
	NoChain  bool
}

// Judge is one worker's evaluation state. It is not safe for concurrent
// use: each worker owns one. Judging does not allocate once the Context's
// event and scratch buffers have grown to their working size.
type Judge struct {
	dec  *packet.Decoder
	view packet.View
	ctx  matchers.Context
	link [14]byte
	// ct is the flow table packets are tracked in (nil: untracked; the
	// stateful matches then see INVALID); res is the packet's tracking
	// result, reused from packet to packet. trackAt says at which hooks a
	// packet is tracked.
	ct      *conntrack.Table
	res     conntrack.Result
	trackAt [matchers.HookPostrouting + 1]bool
	// Default is the verdict for packets the rules cannot judge.
	Default matchers.Verdict
}

// NewJudge returns a Judge for raw IPv4 datagrams as NFQUEUE delivers them
// (no link-layer header).
func NewJudge(def matchers.Verdict) *Judge {
	dec, err := packet.NewDecoder(packet.LinkTypeRaw)
	if err != nil {
		panic("queue: raw decoder: " + err.Error()) // LinkTypeRaw is always supported
	}
	return &Judge{dec: dec, Default: def}
}

// SetConntrack makes the Judge track every packet it judges at one of
// hooks in t, the way the kernel's conntrack does: Track before the rules,
// Confirm when the verdict is ACCEPT, Discard when it is DROP (the order
// of engine.Offline). t may be shared by any number of Judges.
//
// The kernel tracks a packet once, at PREROUTING or OUTPUT, and confirms
// it after the last hook. hooks are the hooks the daemon judges at; a
// packet is tracked at the first of them on its path (PREROUTING, else
// INPUT or FORWARD; OUTPUT, else POSTROUTING), and a packet judged again
// at a later hook is not tracked twice: the rules there see no
// connection (INVALID).
func (j *Judge) SetConntrack(t *conntrack.Table, hooks []matchers.Hook) {
	j.ct = t
	j.trackAt = [matchers.HookPostrouting + 1]bool{}
	has := func(h matchers.Hook) bool {
		for _, x := range hooks {
			if x == h {
				return true
			}
		}
		return false
	}
	j.trackAt[matchers.HookPrerouting] = true
	j.trackAt[matchers.HookOutput] = true
	j.trackAt[matchers.HookInput] = !has(matchers.HookPrerouting)
	j.trackAt[matchers.HookForward] = !has(matchers.HookPrerouting)
	j.trackAt[matchers.HookPostrouting] = !has(matchers.HookOutput)
}

// abandon forgets the connection a packet whose judging panicked created:
// the packet gets the default verdict without a confirm.
func (j *Judge) abandon() {
	if j.ct != nil {
		j.res.Discard()
	}
}

// Events returns the events (LOG lines, REJECTs) of the last packet judged;
// they are valid until the next call to Judge.
func (j *Judge) Events() []matchers.Event { return j.ctx.Events }

// Judge decodes data, evaluates the rules' tables at m.Hook in kernel order
// and returns the outcome. A table that drops ends the traversal, as in the
// kernel; the mark set by one table is seen by the next.
func (j *Judge) Judge(r *Rules, data []byte, m *Meta) Outcome {
	c := &j.ctx
	c.Reset()
	v := &j.view
	j.dec.Decode(data, v)
	if v.Class != packet.ClassOK || v.Family != 4 || m.Hook > matchers.HookPostrouting {
		return Outcome{Verdict: j.Default, Mark: m.Mark, Undecodable: true}
	}
	v.Timestamp = m.Now
	j.fakeLink(m)
	c.Pkt, c.Hook = v, m.Hook
	c.In, c.Out = m.In, m.Out
	c.Mark, c.CtMark, c.HasCt = m.Mark, m.CtMark, m.HasCt
	c.Now = m.Now
	tracked := j.ct != nil && j.trackAt[m.Hook]
	if tracked {
		j.ct.TrackInto(&j.res, v, m.Now)
		if j.res.Drop {
			// The table is full and nothing could be evicted: the kernel
			// drops the packet before any rule sees it.
			return Outcome{Verdict: matchers.Drop, Mark: m.Mark, CtDrop: true}
		}
		c.SetConntrack(j.ct, &j.res)
	}
	out := Outcome{Verdict: matchers.Accept}
	for _, tp := range r.byHook[m.Hook] {
		c.Table = tp.Name
		res := tp.Eval(c, nil)
		out.Decided = res
		if res.Verdict.Base() != matchers.Accept {
			out.Verdict = res.Verdict.Base()
			break
		}
	}
	switch out.Verdict {
	case matchers.Accept, matchers.Drop:
	case matchers.Stolen:
		// The kernel frees a stolen packet: for the sender it is dropped.
		out.Verdict = matchers.Drop
	default:
		out.Verdict, out.Unsupported = j.Default, true
	}
	if tracked {
		if out.Verdict == matchers.Accept {
			if !j.res.Confirm(m.Now) {
				out.Verdict, out.CtDrop = matchers.Drop, true
			}
		} else {
			j.res.Discard()
		}
	}
	out.Mark, out.MarkChanged = c.Mark, c.Mark != m.Mark
	return out
}

// fakeLink gives the View the 14-byte Ethernet header the kernel's LOG
// target prints as MAC=. NFQUEUE sends only the source address and the
// ethertype; the destination is reconstructed: broadcast and multicast from
// the destination IP, otherwise the input device's own address. A loopback
// input has the kernel's all-zero header.
func (j *Judge) fakeLink(m *Meta) {
	v := &j.view
	switch {
	case m.InLoopback:
		clear(j.link[:12])
		binary.BigEndian.PutUint16(j.link[12:], 0x0800)
	case m.HasMAC:
		dst := v.Dst.As4()
		switch {
		case dst == [4]byte{255, 255, 255, 255}:
			copy(j.link[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		case v.Dst.IsMulticast():
			j.link = [14]byte{0x01, 0x00, 0x5e, dst[1] & 0x7f, dst[2], dst[3]}
		default:
			copy(j.link[0:6], m.InMAC[:])
		}
		copy(j.link[6:12], m.SrcMAC[:])
		binary.BigEndian.PutUint16(j.link[12:], m.HwProto)
	default:
		return
	}
	v.Link, v.LinkType = j.link[:], packet.LinkTypeEthernet
	v.PktType = packet.PacketHost
	if v.Link[0]&1 != 0 {
		v.PktType = packet.PacketMulticast
		if v.Dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			v.PktType = packet.PacketBroadcast
		}
	}
}
