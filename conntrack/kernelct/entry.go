package kernelct

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"time"

	ct "github.com/ti-mo/conntrack"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/packet"
)

// Tuple is one direction of a connection. The bridge speaks the userspace
// table's tuple, so a tuple read from the kernel can be handed to
// conntrack.Table.Lookup or Delete unchanged (see Canonical for the one
// difference in what the two tables key on).
type Tuple = conntrack.Tuple

// IP protocol numbers the tuple encoding distinguishes.
const (
	protoICMP    = 1
	protoTCP     = 6
	protoUDP     = 17
	protoDCCP    = 33
	protoICMPv6  = 58
	protoSCTP    = 132
	protoUDPLite = 136
)

// kernelHasPorts reports the protocols whose kernel tuple carries the
// 16-bit source and destination ports (nf_conntrack's TCP, UDP, UDP-Lite,
// SCTP and DCCP trackers). GRE keys are only used with the PPTP helper;
// every other protocol is tracked by addresses alone.
func kernelHasPorts(proto uint8) bool {
	switch proto {
	case protoTCP, protoUDP, protoUDPLite, protoSCTP, protoDCCP:
		return true
	}
	return false
}

// Entry is one kernel conntrack entry, decoded from a ctnetlink message.
// It is a plain value: holding one does not pin anything in the kernel,
// and it does not change when the kernel's entry does.
type Entry struct {
	// ID is the kernel's CTA_ID: unique among the live entries of one
	// namespace, reused after the entry is gone.
	ID uint32
	// Orig and Reply are the original and reply tuples. For ICMP the
	// "ports" hold the identifier and type<<8|code, as in the userspace
	// table.
	Orig, Reply Tuple
	// Status is the kernel's status bit set (IPS_*); the bit values are
	// those of conntrack.Status, which names the common ones.
	Status conntrack.Status
	// TCPState is the TCP tracker's state, TCPNone for other protocols.
	TCPState conntrack.TCPState
	// Timeout is the time left until the entry expires, in whole seconds
	// as the kernel reports it. Destroy events carry no timeout (zero).
	Timeout time.Duration
	// Mark is the connection mark (ctmark).
	Mark uint32
	// Labels are the 128 connlabel bits; zero when the entry has none.
	Labels conntrack.Labels
	// Zone is the conntrack zone (0 unless a CT --zone rule placed it).
	Zone uint16
	// Packets and Bytes are the per-direction counters (index
	// conntrack.DirOriginal, DirReply), valid when HasCounters is true:
	// the kernel keeps them only with net.netfilter.nf_conntrack_acct=1
	// (per namespace) at the time the entry was created.
	Packets, Bytes [2]uint64
	HasCounters    bool
	// Start and Stop are the entry's creation and (in destroy events)
	// deletion times, present only with net.netfilter.nf_conntrack_timestamp=1.
	Start, Stop time.Time
}

// Proto returns the connection's transport protocol number.
func (e *Entry) Proto() uint8 { return e.Orig.Proto }

// Dir returns the direction of t in e, and false if t is neither of e's
// tuples.
func (e *Entry) Dir(t Tuple) (conntrack.Dir, bool) {
	switch t {
	case e.Orig:
		return conntrack.DirOriginal, true
	case e.Reply:
		return conntrack.DirReply, true
	}
	return conntrack.DirOriginal, false
}

// String formats the entry roughly as `conntrack -L` does, for logs and
// test failures.
func (e *Entry) String() string {
	s := fmt.Sprintf("id=%d proto=%d", e.ID, e.Proto())
	if e.Proto() == protoTCP {
		s += " " + e.TCPState.String()
	}
	s += fmt.Sprintf(" timeout=%ds %s %s status=%#x mark=%#x", int64(e.Timeout/time.Second),
		tupleString(e.Orig), tupleString(e.Reply), uint32(e.Status), e.Mark)
	if e.HasCounters {
		s += fmt.Sprintf(" packets=%d/%d bytes=%d/%d", e.Packets[0], e.Packets[1], e.Bytes[0], e.Bytes[1])
	}
	return s
}

func tupleString(t Tuple) string {
	s := fmt.Sprintf("src=%s dst=%s", t.SrcAddr(), t.DstAddr())
	switch {
	case t.Proto == protoICMP || t.Proto == protoICMPv6:
		s += fmt.Sprintf(" type=%d code=%d id=%d", t.ICMPType(), t.ICMPCode(), t.ICMPID())
	case kernelHasPorts(t.Proto):
		s += fmt.Sprintf(" sport=%d dport=%d", t.SrcPort, t.DstPort)
	}
	return s
}

// errNoTuple is wrapped by TupleOf's errors.
var errNoTuple = errors.New("packet has no conntrack tuple")

// TupleOf returns the conntrack tuple of the packet in v, in the packet's
// own direction: looking it up finds the connection whether v travels in
// its original or its reply direction.
//
// It fails for packets the kernel would not look up by their own tuple:
// non-IPv4 or undecodable packets, non-first fragments (the kernel
// reassembles before conntrack), transport headers too short to hold the
// ports, ICMP errors (they belong to the connection they quote) and ICMP
// types that have no reply type. TupleOf does not allocate.
func TupleOf(v *packet.View) (Tuple, error) {
	if v.Class != packet.ClassOK || v.Family != 4 {
		return Tuple{}, fmt.Errorf("kernelct: %w: not a decoded IPv4 packet (%s)", errNoTuple, v.Class)
	}
	if v.FragOff() != 0 {
		return Tuple{}, fmt.Errorf("kernelct: %w: non-first fragment", errNoTuple)
	}
	t := Tuple{Src: v.Src.As16(), Dst: v.Dst.As16(), Proto: v.Proto, Family: 4}
	switch {
	case kernelHasPorts(v.Proto):
		if len(v.L4) < 4 {
			return Tuple{}, fmt.Errorf("kernelct: %w: transport header shorter than its ports", errNoTuple)
		}
		t.SrcPort = binary.BigEndian.Uint16(v.L4[0:2])
		t.DstPort = binary.BigEndian.Uint16(v.L4[2:4])
	case v.Proto == protoICMP:
		if len(v.L4) < 8 {
			return Tuple{}, fmt.Errorf("kernelct: %w: short ICMP header", errNoTuple)
		}
		typ, code := v.L4[0], v.L4[1]
		if !icmpQueryOrReply(typ) {
			return Tuple{}, fmt.Errorf("kernelct: %w: ICMP type %d forms no connection", errNoTuple, typ)
		}
		t.SrcPort = binary.BigEndian.Uint16(v.L4[4:6])
		t.DstPort = uint16(typ)<<8 | uint16(code)
	}
	return t, nil
}

// icmpQueryOrReply reports the ICMP types nf_conntrack keeps tuples for:
// echo, timestamp, information and address-mask requests and replies.
func icmpQueryOrReply(typ uint8) bool {
	switch typ {
	case 0, 8, 13, 14, 15, 16, 17, 18:
		return true
	}
	return false
}

// Canonical returns t in the form the userspace table keys connections
// by. The kernel keeps SCTP and DCCP ports in its tuples; qtables' table
// tracks those protocols generically (addresses and protocol only), so
// their ports are cleared. Every other tuple is returned unchanged.
func Canonical(t Tuple) Tuple {
	if t.Proto == protoSCTP || t.Proto == protoDCCP {
		t.SrcPort, t.DstPort = 0, 0
	}
	return t
}

// fromKernelTuple converts a decoded ctnetlink tuple. It fails when the
// message carried no addresses (a tuple the kernel did not send).
func fromKernelTuple(kt ct.Tuple) (Tuple, error) {
	src, dst := kt.IP.SourceAddress, kt.IP.DestinationAddress
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return Tuple{}, fmt.Errorf("kernelct: incomplete tuple %v", kt)
	}
	t := Tuple{Src: src.As16(), Dst: dst.As16(), Proto: kt.Proto.Protocol, Family: 6}
	if src.Is4() {
		t.Family = 4
	}
	switch {
	case kt.Proto.Protocol == protoICMP || kt.Proto.Protocol == protoICMPv6:
		t.SrcPort = kt.Proto.ICMPID
		t.DstPort = uint16(kt.Proto.ICMPType)<<8 | uint16(kt.Proto.ICMPCode)
	case kernelHasPorts(kt.Proto.Protocol):
		t.SrcPort, t.DstPort = kt.Proto.SourcePort, kt.Proto.DestinationPort
	}
	return t, nil
}

// addrOf returns a tuple address in its own family (IPv4 unmapped).
func addrOf(a [16]byte, family uint8) netip.Addr {
	ad := netip.AddrFrom16(a)
	if family == 4 {
		return ad.Unmap()
	}
	return ad
}

// fromFlow converts a decoded ctnetlink flow into an Entry.
func fromFlow(f *ct.Flow) (Entry, error) {
	orig, err := fromKernelTuple(f.TupleOrig)
	if err != nil {
		return Entry{}, fmt.Errorf("original tuple: %w", err)
	}
	reply, err := fromKernelTuple(f.TupleReply)
	if err != nil {
		return Entry{}, fmt.Errorf("reply tuple: %w", err)
	}
	e := Entry{
		ID:      f.ID,
		Orig:    orig,
		Reply:   reply,
		Status:  conntrack.Status(f.Status),
		Timeout: time.Duration(f.Timeout) * time.Second,
		Mark:    f.Mark,
		Zone:    f.Zone,
		Labels:  labelsFrom(f.Labels),
		Start:   f.Timestamp.Start,
		Stop:    f.Timestamp.Stop,
	}
	if f.ProtoInfo.TCP != nil {
		e.TCPState = conntrack.TCPState(f.ProtoInfo.TCP.State)
	}
	// The kernel sends CTA_COUNTERS_* only when the entry has the
	// accounting extension; an all-zero pair means it did not.
	co, cr := f.CountersOrig, f.CountersReply
	if co.Packets != 0 || cr.Packets != 0 || co.Bytes != 0 || cr.Bytes != 0 {
		e.HasCounters = true
		e.Packets = [2]uint64{co.Packets, cr.Packets}
		e.Bytes = [2]uint64{co.Bytes, cr.Bytes}
	}
	return e, nil
}

// labelsFrom converts CTA_LABELS, the kernel's bitmap of unsigned longs
// in host byte order (bit i of the bitmap is label i), into the userspace
// table's two 64-bit words. The kernel's unsigned long is taken to be as
// wide as this process's uint (a 32-bit process on a 64-bit big-endian
// kernel would misread them).
func labelsFrom(b []byte) conntrack.Labels {
	var l conntrack.Labels
	w := bits.UintSize / 8
	for off := 0; off+w <= len(b) && off < 16; off += w {
		var v uint64
		if w == 8 {
			v = binary.NativeEndian.Uint64(b[off:])
		} else {
			v = uint64(binary.NativeEndian.Uint32(b[off:]))
		}
		first := off * 8 // number of the word's lowest label
		l[first/64] |= v << (first % 64)
	}
	return l
}
