package kernelct

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/bits"
	"net/netip"
	"testing"
	"time"

	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/packet"
)

var (
	a1 = netip.MustParseAddr("192.0.2.1")
	a2 = netip.MustParseAddr("198.51.100.7")
)

func TestTupleOf(t *testing.T) {
	frag := ipv4(a1, a2, packet.ProtoUDP, udpHdr(1, 2, nil))
	binary.BigEndian.PutUint16(frag[6:], 10) // fragment offset 80 bytes
	tests := []struct {
		name  string
		pkt   []byte
		want  Tuple
		noTup bool
	}{
		{name: "tcp", pkt: ipv4(a1, a2, packet.ProtoTCP, tcpHdr(40000, 443, packet.TCPSyn)),
			want: conntrack.TupleFrom(a1, a2, packet.ProtoTCP, 40000, 443)},
		{name: "udp reply direction", pkt: ipv4(a2, a1, packet.ProtoUDP, udpHdr(53, 5353, []byte("x"))),
			want: conntrack.TupleFrom(a2, a1, packet.ProtoUDP, 53, 5353)},
		{name: "icmp echo request", pkt: ipv4(a1, a2, packet.ProtoICMP, icmpHdr(8, 0, 0x1234, 1)),
			want: conntrack.TupleFrom(a1, a2, packet.ProtoICMP, 0x1234, 8<<8)},
		{name: "icmp echo reply", pkt: ipv4(a2, a1, packet.ProtoICMP, icmpHdr(0, 0, 0x1234, 1)),
			want: conntrack.TupleFrom(a2, a1, packet.ProtoICMP, 0x1234, 0)},
		{name: "icmp timestamp", pkt: ipv4(a1, a2, packet.ProtoICMP, icmpHdr(13, 0, 7, 1)),
			want: conntrack.TupleFrom(a1, a2, packet.ProtoICMP, 7, 13<<8)},
		// SCTP keeps its ports in the kernel's tuple (not in the
		// userspace table's: see Canonical).
		{name: "sctp", pkt: ipv4(a1, a2, protoSCTP, udpHdr(2905, 2906, nil)),
			want: Tuple{Src: a1.As16(), Dst: a2.As16(), SrcPort: 2905, DstPort: 2906, Proto: protoSCTP, Family: 4}},
		{name: "gre: addresses only", pkt: ipv4(a1, a2, 47, []byte{0, 0, 8, 0}),
			want: Tuple{Src: a1.As16(), Dst: a2.As16(), Proto: 47, Family: 4}},
		{name: "icmp error", pkt: ipv4(a2, a1, packet.ProtoICMP, icmpHdr(3, 3, 0, 0)), noTup: true},
		{name: "icmp type without reply", pkt: ipv4(a2, a1, packet.ProtoICMP, icmpHdr(9, 0, 0, 0)), noTup: true},
		{name: "short icmp", pkt: ipv4(a1, a2, packet.ProtoICMP, []byte{8, 0, 0, 0}), noTup: true},
		{name: "short tcp", pkt: ipv4(a1, a2, packet.ProtoTCP, []byte{1, 2}), noTup: true},
		{name: "later fragment", pkt: frag, noTup: true},
		{name: "not ip", pkt: []byte{0x60, 0, 0, 0}, noTup: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := TupleOf(view(t, tc.pkt))
			if tc.noTup {
				if !errors.Is(err, errNoTuple) {
					t.Fatalf("TupleOf = %s, %v; want an errNoTuple error", tupleString(got), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("TupleOf = %s, want %s", tupleString(got), tupleString(tc.want))
			}
		})
	}
}

func TestTupleOfAllocs(t *testing.T) {
	v := view(t, ipv4(a1, a2, packet.ProtoTCP, tcpHdr(1, 2, packet.TCPAck)))
	if n := testing.AllocsPerRun(100, func() { TupleOf(v) }); n != 0 {
		t.Errorf("TupleOf allocates %v times per call", n)
	}
}

func TestCanonical(t *testing.T) {
	sctp := Tuple{Src: a1.As16(), Dst: a2.As16(), SrcPort: 1, DstPort: 2, Proto: protoSCTP, Family: 4}
	want := conntrack.TupleFrom(a1, a2, protoSCTP, 1, 2) // the userspace table's key
	if got := Canonical(sctp); got != want {
		t.Errorf("Canonical(sctp) = %s, want %s", tupleString(got), tupleString(want))
	}
	for _, tu := range []Tuple{
		conntrack.TupleFrom(a1, a2, packet.ProtoTCP, 1, 2),
		conntrack.TupleFrom(a1, a2, packet.ProtoUDP, 1, 2),
		conntrack.TupleFrom(a1, a2, packet.ProtoICMP, 9, 8<<8),
	} {
		if got := Canonical(tu); got != tu {
			t.Errorf("Canonical changed %s", tupleString(tu))
		}
	}
}

func TestLabelsFrom(t *testing.T) {
	// The kernel's bitmap: unsigned longs in host order, label i is bit
	// i%W of word i/W.
	b := make([]byte, 16)
	set := func(i int) {
		w := bits.UintSize
		off := i / w * (w / 8)
		if w == 64 {
			binary.NativeEndian.PutUint64(b[off:], binary.NativeEndian.Uint64(b[off:])|1<<(i%w))
		} else {
			binary.NativeEndian.PutUint32(b[off:], binary.NativeEndian.Uint32(b[off:])|1<<(i%w))
		}
	}
	labels := []int{0, 5, 31, 32, 63, 64, 100, 127}
	for _, i := range labels {
		set(i)
	}
	l := labelsFrom(b)
	for i := range 128 {
		want := false
		for _, j := range labels {
			want = want || i == j
		}
		if l.Has(uint(i)) != want {
			t.Errorf("label %d: got %v, want %v", i, l.Has(uint(i)), want)
		}
	}
	if labelsFrom(nil) != (conntrack.Labels{}) {
		t.Error("no CTA_LABELS must mean no labels")
	}
}

// Kernel attribute numbers used to build messages as ctnetlink sends
// them (linux/netfilter/nfnetlink_conntrack.h), independently of the
// ti-mo/conntrack decoder under test.
const (
	ctaTupleReply     = 2
	ctaStatus         = 3
	ctaProtoInfo      = 4
	ctaTimeout        = 7
	ctaCountersOrig   = 9
	ctaCountersReply  = 10
	ctaID             = 12
	ctaZone           = 18
	ctaLabels         = 22
	ctaProtoInfoTCP   = 1
	ctaProtoInfoState = 1
	ctaCountersPkts   = 1
	ctaCountersBytes  = 2
)

// nfTuple encodes t as a CTA_TUPLE_* attribute with ti-mo/netfilter's
// encoder: the reference the hand encoder is checked against.
func nfTuple(typ uint16, t Tuple) netfilter.Attribute {
	ip := netfilter.Attribute{Type: ctaTupleIP, Nested: true}
	if t.Family == 4 {
		ip.Children = []netfilter.Attribute{{Type: ctaIPv4Src, Data: t.Src[12:]}, {Type: ctaIPv4Dst, Data: t.Dst[12:]}}
	} else {
		ip.Children = []netfilter.Attribute{{Type: ctaIPv6Src, Data: t.Src[:]}, {Type: ctaIPv6Dst, Data: t.Dst[:]}}
	}
	proto := netfilter.Attribute{Type: ctaTupleProto, Nested: true, Children: []netfilter.Attribute{{Type: ctaProtoNum, Data: []byte{t.Proto}}}}
	switch {
	case t.Proto == protoICMP:
		proto.Children = append(proto.Children,
			netfilter.Attribute{Type: ctaProtoICMPID, Data: netfilter.Uint16Bytes(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoICMPType, Data: []byte{uint8(t.DstPort >> 8)}},
			netfilter.Attribute{Type: ctaProtoICMPCode, Data: []byte{uint8(t.DstPort)}})
	case t.Proto == protoICMPv6:
		proto.Children = append(proto.Children,
			netfilter.Attribute{Type: ctaProtoICMPv6ID, Data: netfilter.Uint16Bytes(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoICMPv6Type, Data: []byte{uint8(t.DstPort >> 8)}},
			netfilter.Attribute{Type: ctaProtoICMPv6Code, Data: []byte{uint8(t.DstPort)}})
	case kernelHasPorts(t.Proto):
		proto.Children = append(proto.Children,
			netfilter.Attribute{Type: ctaProtoSrcPort, Data: netfilter.Uint16Bytes(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoDstPort, Data: netfilter.Uint16Bytes(t.DstPort)})
	}
	return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{ip, proto}}
}

// flowMsg encodes e as the kernel encodes a conntrack entry in a dump, get
// reply or event of message type typ.
func flowMsg(t testing.TB, typ uint8, flags uint16, e Entry) nlMsg {
	t.Helper()
	attrs := []netfilter.Attribute{nfTuple(ctaTupleOrig, e.Orig), nfTuple(ctaTupleReply, e.Reply),
		{Type: ctaStatus, Data: netfilter.Uint32Bytes(uint32(e.Status))},
		{Type: ctaTimeout, Data: netfilter.Uint32Bytes(uint32(e.Timeout / time.Second))},
		{Type: ctaID, Data: netfilter.Uint32Bytes(e.ID)},
	}
	if e.Mark != 0 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaMark, Data: netfilter.Uint32Bytes(e.Mark)})
	}
	if e.Zone != 0 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaZone, Data: netfilter.Uint16Bytes(e.Zone)})
	}
	if e.Proto() == packet.ProtoTCP {
		attrs = append(attrs, netfilter.Attribute{Type: ctaProtoInfo, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaProtoInfoTCP, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaProtoInfoState, Data: []byte{uint8(e.TCPState)}},
			}},
		}})
	}
	if e.HasCounters {
		for d, typ := range []uint16{ctaCountersOrig, ctaCountersReply} {
			attrs = append(attrs, netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaCountersPkts, Data: netfilter.Uint64Bytes(e.Packets[d])},
				{Type: ctaCountersBytes, Data: netfilter.Uint64Bytes(e.Bytes[d])},
			}})
		}
	}
	if e.Labels != (conntrack.Labels{}) {
		b := make([]byte, 16)
		binary.NativeEndian.PutUint64(b[0:], e.Labels[0])
		binary.NativeEndian.PutUint64(b[8:], e.Labels[1])
		if bits.UintSize == 32 { // 32-bit words, low word first
			for i, w := range []uint64{e.Labels[0], e.Labels[1]} {
				binary.NativeEndian.PutUint32(b[8*i:], uint32(w))
				binary.NativeEndian.PutUint32(b[8*i+4:], uint32(w>>32))
			}
		}
		attrs = append(attrs, netfilter.Attribute{Type: ctaLabels, Data: b})
	}
	ab, err := netfilter.MarshalAttributes(attrs)
	if err != nil {
		t.Fatal(err)
	}
	req := finish(append(requestHeader(typ, flags, family(&e.Orig)), ab...))
	m, rest, err := nextMsg(req)
	if err != nil || len(rest) != 0 {
		t.Fatalf("nextMsg: %v, %d bytes left", err, len(rest))
	}
	return m
}

func sampleEntry() Entry {
	orig := conntrack.TupleFrom(a1, a2, packet.ProtoTCP, 40000, 443)
	reply, _ := orig.Invert()
	return Entry{
		ID: 77, Orig: orig, Reply: reply,
		Status:   conntrack.StatusSeenReply | conntrack.StatusAssured | conntrack.StatusConfirmed,
		TCPState: conntrack.TCPEstablished, Timeout: 431999 * time.Second,
		Mark: 0xdead, Zone: 3, Labels: conntrack.Labels{}.With(1).With(70),
		Packets: [2]uint64{5, 4}, Bytes: [2]uint64{300, 1 << 40}, HasCounters: true,
	}
}

// TestDecodeRoundTrip encodes entries with the request encoder plus the
// kernel's attribute layout and decodes them with ti-mo/conntrack, for
// every tuple form (TCP, UDP, ICMP, ICMPv6, IPv6 addresses, no ports).
func TestDecodeRoundTrip(t *testing.T) {
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	tcp := sampleEntry()
	mk := func(orig Tuple) Entry {
		reply, ok := orig.Invert()
		if !ok {
			t.Fatalf("no inverse of %s", tupleString(orig))
		}
		return Entry{ID: 1, Orig: orig, Reply: reply, Status: conntrack.StatusConfirmed, Timeout: 30 * time.Second}
	}
	icmp6 := Tuple{Src: v6a.As16(), Dst: v6b.As16(), SrcPort: 99, DstPort: 128 << 8, Proto: protoICMPv6, Family: 6}
	icmp6Reply := icmp6
	icmp6Reply.Src, icmp6Reply.Dst, icmp6Reply.DstPort = icmp6.Dst, icmp6.Src, 129<<8
	for _, e := range []Entry{
		tcp,
		mk(conntrack.TupleFrom(a1, a2, packet.ProtoUDP, 5353, 53)),
		mk(conntrack.TupleFrom(a1, a2, packet.ProtoICMP, 0x4242, 8<<8)),
		mk(conntrack.TupleFrom(v6a, v6b, packet.ProtoUDP, 1, 2)),
		mk(conntrack.TupleFrom(a1, a2, 47, 0, 0)),
		{ID: 2, Orig: icmp6, Reply: icmp6Reply, Timeout: time.Second},
	} {
		m := flowMsg(t, msgNew, 0, e)
		got, kev, err := decodeFlow(&m)
		if err != nil {
			t.Fatalf("%s: %v", e.String(), err)
		}
		if got != e {
			t.Errorf("round trip:\n got %s (%+v)\nwant %s (%+v)", got.String(), got, e.String(), e)
		}
		if kev.Flow == nil {
			t.Error("no flow in the decoded event")
		}
	}
}

func TestDecodeGarbage(t *testing.T) {
	for _, data := range [][]byte{nil, {2, 0}, {2, 0, 0, 0, 4, 0}, {2, 0, 0, 0, 8, 0, 1, 0x80, 1, 2, 3, 4}} {
		m := nlMsg{typ: nfnlSubsysCTNetlink<<8 | uint16(msgNew), data: data}
		if _, _, err := decodeFlow(&m); !errors.Is(err, errDecode) {
			t.Errorf("decodeFlow(%x) = %v, want errDecode", data, err)
		}
	}
	if _, _, err := nextMsg([]byte{1, 2, 3}); err == nil {
		t.Error("nextMsg accepted a 3-byte datagram")
	}
	b := make([]byte, 16)
	binary.NativeEndian.PutUint32(b, 64)
	if _, _, err := nextMsg(b); err == nil {
		t.Error("nextMsg accepted a length beyond the datagram")
	}
}

func TestRequestHeader(t *testing.T) {
	tu := conntrack.TupleFrom(a1, a2, packet.ProtoTCP, 1, 2)
	req, err := tupleRequest(msgDelete, flagRequest|flagAck, &tu, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, rest, err := nextMsg(req)
	if err != nil || len(rest) != 0 {
		t.Fatal(err, len(rest))
	}
	if m.typ != 1<<8|2 || m.flags != unix.NLM_F_REQUEST|unix.NLM_F_ACK || m.data[0] != unix.AF_INET || m.data[1] != 0 {
		t.Errorf("header type %#x flags %#x family %d version %d", m.typ, m.flags, m.data[0], m.data[1])
	}
	if int(binary.NativeEndian.Uint32(req)) != len(req) {
		t.Error("length field does not match the message")
	}
}

// TestEncodeMatchesNetfilter checks the hand encoder byte for byte against
// ti-mo/netfilter's attribute encoder, for every tuple form and with the
// mark attributes.
func TestEncodeMatchesNetfilter(t *testing.T) {
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	mark, mask := uint32(0xa5000012), uint32(0xff0000ff)
	for _, tu := range []Tuple{
		conntrack.TupleFrom(a1, a2, packet.ProtoTCP, 40000, 443),
		conntrack.TupleFrom(a2, a1, packet.ProtoUDP, 53, 1),
		conntrack.TupleFrom(a1, a2, packet.ProtoICMP, 0xbeef, 8<<8|1),
		conntrack.TupleFrom(a1, a2, 47, 0, 0),
		{Src: a1.As16(), Dst: a2.As16(), SrcPort: 7, DstPort: 9, Proto: protoSCTP, Family: 4},
		conntrack.TupleFrom(v6a, v6b, packet.ProtoTCP, 1, 2),
		{Src: v6a.As16(), Dst: v6b.As16(), SrcPort: 3, DstPort: 128 << 8, Proto: protoICMPv6, Family: 6},
	} {
		got, err := tupleRequest(msgNew, flagRequest|flagAck, &tu, &mark, &mask)
		if err != nil {
			t.Fatal(err)
		}
		ab, err := netfilter.MarshalAttributes([]netfilter.Attribute{
			nfTuple(ctaTupleOrig, tu),
			{Type: ctaMark, Data: netfilter.Uint32Bytes(mark)},
			{Type: ctaMarkMask, Data: netfilter.Uint32Bytes(mask)},
		})
		if err != nil {
			t.Fatal(err)
		}
		want := finish(append(requestHeader(msgNew, flagRequest|flagAck, family(&tu)), ab...))
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %x\nwant %x", tupleString(tu), got, want)
		}
	}
	bad := Tuple{Family: 4, Proto: packet.ProtoTCP} // zero addresses are not IPv4-mapped
	if _, err := tupleRequest(msgGet, flagRequest, &bad, nil, nil); err == nil {
		t.Error("encoded an IPv4 tuple without IPv4 addresses")
	}
	if _, err := tupleRequest(msgGet, flagRequest, &Tuple{}, nil, nil); err == nil {
		t.Error("encoded a tuple without a family")
	}
}

func BenchmarkEncodeSetMark(b *testing.B) {
	tu := conntrack.TupleFrom(a1, a2, packet.ProtoTCP, 40000, 443)
	mark, mask := uint32(0x100), uint32(0x100)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tupleRequest(msgNew, flagRequest|flagAck, &tu, &mark, &mask); err != nil {
			b.Fatal(err)
		}
	}
}
