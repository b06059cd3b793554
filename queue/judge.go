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
	return rulesOf(rs, prog, source), nil
}

// rulesOf is CompileRules for a Program already compiled.
func rulesOf(rs *engine.Ruleset, prog *engine.Program, source string) *Rules {
	r := &Rules{Set: rs, Prog: prog, Source: source}
	for h := range r.byHook {
		for _, name := range tableOrder {
			if tp := prog.Table(name); tp != nil && tp.HasHook(matchers.Hook(h)) {
				r.byHook[h] = append(r.byHook[h], tp)
			}
		}
	}
	return r
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

// judgeBatch is how many packets a Judge takes in one batch: an NFQUEUE
// read's worth, which is also the flow table's TrackBatch stage.
const judgeBatch = recvBatch

// slotState is what Eval does with a packet of the batch.
type slotState uint8

const (
	// slotFailed: decoding panicked, or tracking the batch did; the packet
	// gets the default verdict. Add starts every slot in this state.
	slotFailed slotState = iota
	// slotNoChain: the daemon found no table with a chain at the hook
	// (addNoChain); ACCEPT, untracked.
	slotNoChain
	// slotUndecodable: no IPv4 datagram; the default verdict, untracked.
	slotUndecodable
	// slotUntracked: judged without a connection (INVALID).
	slotUntracked
	// slotTracked: judged with its flow table result.
	slotTracked
)

// pending is one packet of a batch between Add and Eval.
type pending struct {
	view packet.View
	// link backs view.Link when fakeLink reconstructs the header.
	link  [14]byte
	meta  Meta
	state slotState
	// res is the packet's index in the Judge's results (slotTracked).
	res int
}

// Judge is one worker's evaluation state. It is not safe for concurrent
// use: each worker owns one. Judging does not allocate once the Context's
// event and scratch buffers have grown to their working size.
//
// A Judge takes packets a batch at a time, so that the flow table looks
// them all up together (conntrack.Table.TrackBatch overlaps their cache
// misses): Begin, Add for each packet, Track, then Eval for each packet
// in order. Judge is the batch of one.
type Judge struct {
	dec *packet.Decoder
	ctx matchers.Context
	// The batch: pend[:n] its packets; views[:nt] and res[:nt] those that
	// are tracked, in order; tracked is set once Track ran; cur is the
	// packet Eval judged last (Events and abandon refer to it) and view
	// its decoded form, valid until the next Begin.
	pend    [judgeBatch]pending
	n       int
	views   [judgeBatch]*packet.View
	res     [judgeBatch]conntrack.Result
	nt      int
	tracked bool
	// trackedTo is how many of res[:nt] are tracked: Track tracks the
	// batch a segment at a time (see trackSegment), at time now.
	trackedTo int
	now       time.Time
	segKeys   flowKeySet
	cur       int
	view      *packet.View
	// ct is the flow table packets are tracked in (nil: untracked; the
	// stateful matches then see INVALID). trackAt says at which hooks a
	// packet is tracked.
	ct      *conntrack.Table
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
	if p := &j.pend[j.cur]; j.cur < j.n && j.tracked && p.state == slotTracked && p.res < j.trackedTo {
		j.res[p.res].Discard()
	}
}

// abandonBatch is abandon for every packet of the batch when tracking
// the batch panicked: the connections the packets tracked so far created
// are forgotten, and every tracked packet gets the default verdict. (A
// Result the panic left untouched still holds the previous batch's
// reference, confirmed or discarded long since: Discard ignores it.)
func (j *Judge) abandonBatch() {
	for i := range j.n {
		if p := &j.pend[i]; p.state == slotTracked {
			j.res[p.res].Discard()
			p.state = slotFailed
		}
	}
	j.tracked = true
}

// Events returns the events (LOG lines, REJECTs) of the last packet judged;
// they are valid until the next call to Judge or Eval.
func (j *Judge) Events() []matchers.Event { return j.ctx.Events }

// Judge judges one packet: a batch of one. It decodes data, evaluates
// the rules' tables at m.Hook in kernel order and returns the outcome. A
// table that drops ends the traversal, as in the kernel; the mark set by
// one table is seen by the next.
func (j *Judge) Judge(r *Rules, data []byte, m *Meta) Outcome {
	j.Begin()
	j.Add(r, data, m)
	j.Track(m.Now)
	return j.Eval(r, 0)
}

// Begin starts a batch, forgetting the previous one.
func (j *Judge) Begin() {
	j.n, j.nt, j.tracked, j.cur = 0, 0, false, 0
}

// Full reports whether the batch holds as many packets as it can.
func (j *Judge) Full() bool { return j.n == judgeBatch }

// Add decodes data, a packet that m describes and the rules r will judge,
// into the batch and returns its index there. It panics if the batch is
// full. Undecodable packets and those not tracked at their hook are not
// tracked; Eval gives them their outcome without a connection. r must be
// the rules Eval is called with.
func (j *Judge) Add(r *Rules, data []byte, m *Meta) int {
	if j.n == judgeBatch {
		panic("queue: Judge batch overflow")
	}
	i := j.n
	j.n++
	p := &j.pend[i]
	// Until decoding returns, the packet counts as failed: a panic in
	// the decoder leaves it so.
	p.state, p.meta = slotFailed, *m
	v := &p.view
	j.dec.Decode(data, v)
	if v.Class != packet.ClassOK || v.Family != 4 || m.Hook > matchers.HookPostrouting {
		p.state = slotUndecodable
		return i
	}
	v.Timestamp = m.Now
	fakeLink(v, &p.link, m)
	if j.ct == nil || !j.trackAt[m.Hook] {
		p.state = slotUntracked
		return i
	}
	p.state, p.res = slotTracked, j.nt
	j.views[j.nt] = v
	j.nt++
	return i
}

// addNoChain adds a packet at a hook where no table of the rules has a
// chain: Eval accepts it (NoChain) without decoding or tracking it.
func (j *Judge) addNoChain(mark uint32) {
	j.addSlot(slotNoChain, mark)
}

// addFailed adds a packet whose Add could not run (a panic before it):
// Eval gives it the default verdict.
func (j *Judge) addFailed(mark uint32) {
	if j.n < judgeBatch {
		j.addSlot(slotFailed, mark)
	}
}

func (j *Judge) addSlot(st slotState, mark uint32) {
	if j.n == judgeBatch {
		panic("queue: Judge batch overflow")
	}
	j.pend[j.n].state, j.pend[j.n].meta = st, Meta{Mark: mark}
	j.n++
}

// Track starts tracking the batch's tracked packets in the flow table,
// with the time now. The result is exactly what tracking, judging and
// confirming them one at a time in order would give, while most of the
// batch is looked up at once (conntrack.Table.TrackBatch overlaps their
// cache misses).
//
// A batch looked up at once would not be exact: a packet would not find
// the connection an earlier packet of the batch creates (it is confirmed
// only when that packet is accepted), so two first packets of a flow
// would both be NEW and the second's confirm would clash (dropped for
// TCP and ICMP); and a packet would not see what the rules did to its
// connection for an earlier one (CONNMARK). So the batch is tracked in
// segments: a segment ends before a packet that may belong to a flow
// an earlier packet of the segment belongs to, or that is an ICMP
// error (it is resolved through the flow it quotes), and Eval tracks the
// next segment when it reaches it, after the previous packets were
// judged and confirmed.
func (j *Judge) Track(now time.Time) {
	if j.tracked {
		return
	}
	j.tracked, j.trackedTo, j.now = true, 0, now
	if j.nt > 0 {
		j.trackSegment()
	}
}

// trackSegment tracks the next segment of the batch: res[trackedTo:e]
// with e as Track describes. If tracking panics, the segment's packets
// get the default verdict (their new connections are forgotten) and the
// panic goes on to the caller.
func (j *Judge) trackSegment() {
	s := j.trackedTo
	e := s + 1
	j.segKeys.reset()
	k, _ := flowKeyOf(j.views[s])
	j.segKeys.add(k)
	for e < j.nt {
		k, alone := flowKeyOf(j.views[e])
		if alone || !j.segKeys.add(k) {
			break
		}
		e++
	}
	j.trackedTo = e
	defer func() {
		if p := recover(); p != nil {
			for i := range j.n {
				if q := &j.pend[i]; q.state == slotTracked && q.res >= s && q.res < e {
					j.res[q.res].Discard()
					q.state = slotFailed
				}
			}
			panic(p)
		}
	}()
	j.ct.TrackBatch(j.views[s:e], j.now, j.res[s:e])
}

// Eval judges packet i of the batch (Track is called first if it has not
// been) and returns its outcome: the tables at its hook in kernel order;
// then, for a tracked packet, Confirm if it is accepted, Discard if not.
// Packets must be judged in the order they were added, each once, so
// that their connections are confirmed in that order.
func (j *Judge) Eval(r *Rules, i int) Outcome {
	if !j.tracked {
		j.Track(j.pend[i].meta.Now)
	}
	p := &j.pend[i]
	j.cur, j.view = i, &p.view
	if p.state == slotTracked && p.res >= j.trackedTo {
		j.trackSegment()
	}
	m := &p.meta
	c := &j.ctx
	c.Reset()
	switch p.state {
	case slotFailed:
		return Outcome{Verdict: j.Default, Mark: m.Mark, Panicked: true}
	case slotNoChain:
		return Outcome{Verdict: matchers.Accept, Mark: m.Mark, NoChain: true}
	case slotUndecodable:
		return Outcome{Verdict: j.Default, Mark: m.Mark, Undecodable: true}
	}
	c.Pkt, c.Hook = &p.view, m.Hook
	c.In, c.Out = m.In, m.Out
	c.Mark, c.CtMark, c.HasCt = m.Mark, m.CtMark, m.HasCt
	c.Now = m.Now
	var res *conntrack.Result
	if p.state == slotTracked {
		res = &j.res[p.res]
		if res.Drop {
			// The table is full and nothing could be evicted: the kernel
			// drops the packet before any rule sees it.
			return Outcome{Verdict: matchers.Drop, Mark: m.Mark, CtDrop: true}
		}
		c.SetConntrack(j.ct, res)
	}
	out := Outcome{Verdict: matchers.Accept}
	for _, tp := range r.byHook[m.Hook] {
		c.Table = tp.Name
		er := tp.Eval(c, nil)
		out.Decided = er
		if er.Verdict.Base() != matchers.Accept {
			out.Verdict = er.Verdict.Base()
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
	if res != nil {
		if out.Verdict == matchers.Accept {
			if !res.Confirm(m.Now) {
				out.Verdict, out.CtDrop = matchers.Drop, true
			}
		} else {
			res.Discard()
		}
	}
	out.Mark, out.MarkChanged = c.Mark, c.Mark != m.Mark
	return out
}

// fakeLink gives the View the 14-byte Ethernet header the kernel's LOG
// target prints as MAC=. NFQUEUE sends only the source address and the
// ethertype; the destination is reconstructed: broadcast and multicast from
// the destination IP, otherwise the input device's own address. A loopback
// input has the kernel's all-zero header. link backs the header.
func fakeLink(v *packet.View, link *[14]byte, m *Meta) {
	switch {
	case m.InLoopback:
		clear(link[:12])
		binary.BigEndian.PutUint16(link[12:], 0x0800)
	case m.HasMAC:
		dst := v.Dst.As4()
		switch {
		case dst == [4]byte{255, 255, 255, 255}:
			copy(link[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		case v.Dst.IsMulticast():
			*link = [14]byte{0x01, 0x00, 0x5e, dst[1] & 0x7f, dst[2], dst[3]}
		default:
			copy(link[0:6], m.InMAC[:])
		}
		copy(link[6:12], m.SrcMAC[:])
		binary.BigEndian.PutUint16(link[12:], m.HwProto)
	default:
		return
	}
	v.Link, v.LinkType = link[:], packet.LinkTypeEthernet
	v.PktType = packet.PacketHost
	if v.Link[0]&1 != 0 {
		v.PktType = packet.PacketMulticast
		if v.Dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			v.PktType = packet.PacketBroadcast
		}
	}
}
