package packet

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"unsafe"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// want is what a decoded View must hold. Fields left zero are checked as
// zero too, so every case states the whole expected view.
type want struct {
	class   Class
	linkLen int // -1: Link is nil (raw IP)
	vlan    int16
	pkt     uint8

	family   uint8
	src, dst string
	proto    uint8
	len      int // View.Len
	netLen   int // len(View.Network)
	ttl, tos uint8
	ihl      uint8
	id       uint16
	frag     uint16
	options  []byte
	l4Len    int

	hasPorts     bool
	sport, dport uint16
	hasTransport bool
	flags        uint8
	icmpType     uint8
	icmpCode     uint8
	payload      []byte
}

func mustDecoder(t testing.TB, lt uint16) *Decoder {
	t.Helper()
	d, err := NewDecoder(lt)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func checkView(t *testing.T, data []byte, v *View, w want) {
	t.Helper()
	if v.Class != w.class {
		t.Errorf("Class = %v, want %v", v.Class, w.class)
	}
	if w.linkLen < 0 {
		if v.Link != nil {
			t.Errorf("Link = %x, want nil", v.Link)
		}
	} else if len(v.Link) != w.linkLen || !bytes.Equal(v.Link, data[:w.linkLen]) {
		t.Errorf("Link = %x (%d bytes), want the first %d bytes of the frame", v.Link, len(v.Link), w.linkLen)
	}
	if v.VLAN != w.vlan {
		t.Errorf("VLAN = %d, want %d", v.VLAN, w.vlan)
	}
	if v.PktType != w.pkt {
		t.Errorf("PktType = %d, want %d", v.PktType, w.pkt)
	}
	if v.Family != w.family {
		t.Errorf("Family = %d, want %d", v.Family, w.family)
	}
	addr := func(s string) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		return netip.MustParseAddr(s)
	}
	if v.Src != addr(w.src) || v.Dst != addr(w.dst) {
		t.Errorf("Src, Dst = %v, %v, want %s, %s", v.Src, v.Dst, w.src, w.dst)
	}
	if v.Proto != w.proto || v.Len != w.len || len(v.Network) != w.netLen {
		t.Errorf("Proto, Len, len(Network) = %d, %d, %d, want %d, %d, %d", v.Proto, v.Len, len(v.Network), w.proto, w.len, w.netLen)
	}
	if w.netLen > 0 && !bytes.Equal(v.Network, data[len(data)-len(v.Network)-trailer(data, v):len(data)-trailer(data, v)]) {
		t.Errorf("Network does not alias the frame's IP bytes")
	}
	if v.TTL != w.ttl || v.TOS != w.tos || v.IPv4.IHL != w.ihl || v.IPv4.ID != w.id || v.IPv4.FragWord != w.frag {
		t.Errorf("TTL, TOS, IHL, ID, FragWord = %d, %#x, %d, %d, %#x, want %d, %#x, %d, %d, %#x",
			v.TTL, v.TOS, v.IPv4.IHL, v.IPv4.ID, v.IPv4.FragWord, w.ttl, w.tos, w.ihl, w.id, w.frag)
	}
	if !bytes.Equal(v.IPv4.Options, w.options) {
		t.Errorf("Options = %x, want %x", v.IPv4.Options, w.options)
	}
	if len(v.L4) != w.l4Len {
		t.Errorf("len(L4) = %d, want %d", len(v.L4), w.l4Len)
	}
	if v.HasPorts != w.hasPorts || v.SrcPort != w.sport || v.DstPort != w.dport {
		t.Errorf("HasPorts, SrcPort, DstPort = %v, %d, %d, want %v, %d, %d", v.HasPorts, v.SrcPort, v.DstPort, w.hasPorts, w.sport, w.dport)
	}
	if v.HasTransport != w.hasTransport || v.TCPFlags != w.flags || v.ICMPType != w.icmpType || v.ICMPCode != w.icmpCode {
		t.Errorf("HasTransport, TCPFlags, ICMP = %v, %#x, %d/%d, want %v, %#x, %d/%d",
			v.HasTransport, v.TCPFlags, v.ICMPType, v.ICMPCode, w.hasTransport, w.flags, w.icmpType, w.icmpCode)
	}
	if !bytes.Equal(v.Payload, w.payload) {
		t.Errorf("Payload = %q, want %q", v.Payload, w.payload)
	}
}

// trailer is how many bytes follow the IP datagram in the frame (Ethernet
// padding), known from the slices' positions.
func trailer(data []byte, v *View) int {
	off, ok := offsetIn(data, v.Network)
	if !ok {
		return 0
	}
	return len(data) - off - len(v.Network)
}

// offsetIn reports where s starts inside data, and whether it lies wholly
// inside it.
func offsetIn(data, s []byte) (int, bool) {
	if len(s) == 0 {
		return 0, true
	}
	if len(data) == 0 {
		return 0, false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	if p < base || p+uintptr(len(s)) > base+uintptr(len(data)) {
		return 0, false
	}
	return int(p - base), true
}

func TestDecode(t *testing.T) {
	ip, tcp, pl := sshSYN()
	rawTCP := serialize(t, ip, tcp, pl)
	// The SSH SYN as the spec's LOG example reads it, at any link layer.
	synWant := func(class Class, linkLen int, vlan int16, pkt uint8) want {
		return want{
			class: class, linkLen: linkLen, vlan: vlan, pkt: pkt,
			family: 4, src: "198.51.100.7", dst: "192.0.2.10", proto: ProtoTCP,
			len: 65, netLen: 65, ttl: 52, tos: 0x10, ihl: 5, id: 31337, frag: IPv4DF,
			l4Len: 45, hasPorts: true, sport: 51514, dport: 22,
			hasTransport: true, flags: TCPSyn, payload: []byte("hello"),
		}
	}

	udpIP := newIPv4(layers.IPProtocolUDP, ipB, net4(255, 255, 255, 255))
	udp := &layers.UDP{SrcPort: 68, DstPort: 67}
	udp.SetNetworkLayerForChecksum(udpIP)
	bcastUDP := serialize(t, ethHdr(macBcast, layers.EthernetTypeIPv4), udpIP, udp, gopacket.Payload("0123456789"))
	udpWant := want{
		class: ClassOK, linkLen: 14, vlan: -1, pkt: PacketBroadcast,
		family: 4, src: "192.0.2.10", dst: "255.255.255.255", proto: ProtoUDP,
		len: 38, netLen: 38, ttl: 64, ihl: 5, id: 4242, l4Len: 18,
		hasPorts: true, sport: 68, dport: 67, hasTransport: true, payload: []byte("0123456789"),
	}

	icmpIP := newIPv4(layers.IPProtocolICMPv4, ipB, net4(224, 0, 0, 1))
	mcastICMP := serialize(t, ethHdr(macMcast, layers.EthernetTypeIPv4), icmpIP,
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 4711, Seq: 1}, gopacket.Payload("ping"))
	icmpWant := want{
		class: ClassOK, linkLen: 14, vlan: -1, pkt: PacketMulticast,
		family: 4, src: "192.0.2.10", dst: "224.0.0.1", proto: ProtoICMP,
		len: 32, netLen: 32, ttl: 64, ihl: 5, id: 4242, l4Len: 12,
		hasTransport: true, icmpType: 8, payload: []byte("ping"),
	}

	// A UDP datagram without payload: 42-byte frame padded to 60.
	padIP := newIPv4(layers.IPProtocolUDP, ipA, ipB)
	padUDP := &layers.UDP{SrcPort: 1000, DstPort: 2000}
	padUDP.SetNetworkLayerForChecksum(padIP)
	padded := append(serialize(t, ethHdr(macB, layers.EthernetTypeIPv4), padIP, padUDP), make([]byte, 18)...)

	// IPv4 with a router-alert option (IHL 6).
	optIP := newIPv4(layers.IPProtocolUDP, ipB, ipA)
	optIP.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
	optUDP := &layers.UDP{SrcPort: 5000, DstPort: 9}
	optUDP.SetNetworkLayerForChecksum(optIP)
	withOpts := serialize(t, optIP, optUDP, gopacket.Payload("x"))

	// First fragment of a TCP segment (MF, offset 0) and a later one.
	f1IP := newIPv4(layers.IPProtocolTCP, ipA, ipB)
	f1IP.Flags = layers.IPv4MoreFragments
	f1TCP := &layers.TCP{SrcPort: 1234, DstPort: 80, ACK: true, PSH: true, DataOffset: 5}
	f1TCP.SetNetworkLayerForChecksum(f1IP)
	frag1 := serialize(t, f1IP, f1TCP, gopacket.Payload(make([]byte, 16)))
	f2IP := newIPv4(layers.IPProtocolTCP, ipA, ipB)
	f2IP.FragOffset = 185
	frag2 := serialize(t, f2IP, gopacket.Payload(bytes.Repeat([]byte{0xab}, 24)))

	// TCP headers whose data offset is below 5 or beyond the segment.
	badDoff := append([]byte(nil), rawTCP...)
	badDoff[20+12] = 4 << 4
	bigDoff := serialize(t, newIPv4(layers.IPProtocolTCP, ipA, ipB), gopacket.Payload(tcpBytes(15)))

	// A UDP header cut by the IP total length: 7 bytes of transport.
	shortUDP := serialize(t, newIPv4(layers.IPProtocolUDP, ipA, ipB), gopacket.Payload([]byte{0, 53, 0, 53, 0, 7, 0}))
	gre := serialize(t, newIPv4(47, ipA, ipB), gopacket.Payload([]byte{0, 0, 0x08, 0x00}))

	sll2 := func(pt uint8, hatype uint16, proto layers.EthernetType, inner []byte) []byte {
		return serialize(t, &LinuxSLL2{ProtocolType: proto, ARPHRDType: hatype, PacketType: pt, Addr: macA, InterfaceIndex: 7}, gopacket.Payload(inner))
	}
	qinq := serialize(t, ethHdr(macB, layers.EthernetTypeQinQ),
		&layers.Dot1Q{VLANIdentifier: 200, Type: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 300, Type: layers.EthernetTypeIPv4}, ip, tcp, pl)

	withVersion := func(b []byte, first byte) []byte {
		b = append([]byte(nil), b...)
		b[0] = first
		return b
	}
	withTotLen := func(b []byte, n uint16) []byte {
		b = append([]byte(nil), b...)
		binary.BigEndian.PutUint16(b[2:4], n)
		return b
	}

	tests := []struct {
		name string
		lt   uint16
		data []byte
		want want
	}{
		{"ethernet tcp syn with options", LinkTypeEthernet, ethTCPFrame(t), synWant(ClassOK, 14, -1, PacketHost)},
		{"ethernet broadcast udp", LinkTypeEthernet, bcastUDP, udpWant},
		{"ethernet multicast icmp", LinkTypeEthernet, mcastICMP, icmpWant},
		{"ethernet padding trimmed", LinkTypeEthernet, padded, want{
			class: ClassOK, linkLen: 14, vlan: -1, family: 4, src: "198.51.100.7", dst: "192.0.2.10",
			proto: ProtoUDP, len: 28, netLen: 28, ttl: 64, ihl: 5, id: 4242, l4Len: 8,
			hasPorts: true, sport: 1000, dport: 2000, hasTransport: true, payload: []byte{},
		}},
		{"802.1q", LinkTypeEthernet, serialize(t, ethHdr(macB, layers.EthernetTypeDot1Q),
			&layers.Dot1Q{VLANIdentifier: 100, Priority: 5, Type: layers.EthernetTypeIPv4}, ip, tcp, pl),
			synWant(ClassOK, 18, 100, PacketHost)},
		{"qinq outer id", LinkTypeEthernet, qinq, synWant(ClassOK, 22, 200, PacketHost)},
		{"sll outgoing", LinkTypeLinuxSLL, cat(sllHeader(4, 1, 6, macA, 0x0800), rawTCP), synWant(ClassOK, 16, -1, PacketOutgoing)},
		{"sll address length over 8", LinkTypeLinuxSLL, cat(sllHeader(1, 1, 300, macA, 0x0800), rawTCP), synWant(ClassOK, 16, -1, PacketBroadcast)},
		{"sll with vlan tag", LinkTypeLinuxSLL, cat(sllHeader(0, 1, 6, macA, 0x8100), []byte{0x00, 0x0a, 0x08, 0x00}, rawTCP), synWant(ClassOK, 20, 10, PacketHost)},
		{"sll2 otherhost", LinkTypeLinuxSLL2, sll2(3, 1, layers.EthernetTypeIPv4, rawTCP), synWant(ClassOK, 20, -1, PacketOtherHost)},
		{"sll2 unknown packet type", LinkTypeLinuxSLL2, sll2(200, 1, layers.EthernetTypeIPv4, rawTCP), synWant(ClassOK, 20, -1, PacketHost)},
		{"raw ip", LinkTypeRaw, rawTCP, synWant(ClassOK, -1, -1, PacketHost)},
		{"linktype ipv4", LinkTypeIPv4, rawTCP, synWant(ClassOK, -1, -1, PacketHost)},
		{"dlt 12 raw", LinkTypeRawDLT12, rawTCP, synWant(ClassOK, -1, -1, PacketHost)},
		{"ip options", LinkTypeRaw, withOpts, want{
			class: ClassOK, linkLen: -1, vlan: -1, family: 4, src: "192.0.2.10", dst: "198.51.100.7",
			proto: ProtoUDP, len: 33, netLen: 33, ttl: 64, ihl: 6, id: 4242, options: []byte{148, 4, 0, 0},
			l4Len: 9, hasPorts: true, sport: 5000, dport: 9, hasTransport: true, payload: []byte("x"),
		}},
		{"first fragment", LinkTypeRaw, frag1, want{
			class: ClassOK, linkLen: -1, vlan: -1, family: 4, src: "198.51.100.7", dst: "192.0.2.10",
			proto: ProtoTCP, len: 56, netLen: 56, ttl: 64, ihl: 5, id: 4242, frag: IPv4MF, l4Len: 36,
			hasPorts: true, sport: 1234, dport: 80, hasTransport: true, flags: TCPAck | TCPPsh, payload: make([]byte, 16),
		}},
		{"non-first fragment", LinkTypeRaw, frag2, want{
			class: ClassOK, linkLen: -1, vlan: -1, family: 4, src: "198.51.100.7", dst: "192.0.2.10",
			proto: ProtoTCP, len: 44, netLen: 44, ttl: 64, ihl: 5, id: 4242, frag: 185, l4Len: 24,
		}},
		{"tcp data offset below 5", LinkTypeRaw, badDoff, want{
			class: ClassOK, linkLen: -1, vlan: -1, family: 4, src: "198.51.100.7", dst: "192.0.2.10",
			proto: ProtoTCP, len: 65, netLen: 65, ttl: 52, tos: 0x10, ihl: 5, id: 31337, frag: IPv4DF, l4Len: 45,
			hasPorts: true, sport: 51514, dport: 22,
		}},
		{"tcp data offset past the segment", LinkTypeRaw, bigDoff, want{
			class: ClassOK, linkLen: -1, vlan: -1, family: 4, src: "198.51.100.7", dst: "192.0.2.10",
			proto: ProtoTCP, len: 40, netLen: 40, ttl: 64, ihl: 5, id: 4242, l4Len: 20,
			hasPorts: true, sport: 0x1234, dport: 0x5678,
		}},
		{"udp header cut by total length", LinkTypeRaw, shortUDP, want{
			class: ClassOK, linkLen: -1, vlan: -1, family: 4, src: "198.51.100.7", dst: "192.0.2.10",
			proto: ProtoUDP, len: 27, netLen: 27, ttl: 64, ihl: 5, id: 4242, l4Len: 7,
			hasPorts: true, sport: 53, dport: 53,
		}},
		{"gre has no ports", LinkTypeRaw, gre, want{
			class: ClassOK, linkLen: -1, vlan: -1, family: 4, src: "198.51.100.7", dst: "192.0.2.10",
			proto: 47, len: 24, netLen: 24, ttl: 64, ihl: 5, id: 4242, l4Len: 4,
		}},

		{"arp", LinkTypeEthernet, cat([]byte(macBcast), []byte(macA), []byte{0x08, 0x06}, make([]byte, 28)), want{class: ClassNonIP, linkLen: 14, vlan: -1, pkt: PacketBroadcast}},
		{"ipv6 ethertype", LinkTypeEthernet, cat([]byte(macB), []byte(macA), []byte{0x86, 0xdd}, withVersion(rawTCP, 0x60)), want{class: ClassNonIP, linkLen: 14, vlan: -1}},
		{"802.3 length field", LinkTypeEthernet, cat([]byte(macB), []byte(macA), []byte{0x00, 0x20}, make([]byte, 46)), want{class: ClassNonIP, linkLen: 14, vlan: -1}},
		{"raw ipv6", LinkTypeRaw, withVersion(rawTCP, 0x60), want{class: ClassNonIP, linkLen: -1, vlan: -1}},
		{"linktype ipv6", LinkTypeIPv6, withVersion(rawTCP, 0x60), want{class: ClassNonIP, linkLen: -1, vlan: -1}},
		{"sll2 radiotap ignores protocol", LinkTypeLinuxSLL2, sll2(0, arphrdRadiotap, layers.EthernetTypeIPv4, rawTCP), want{class: ClassNonIP, linkLen: 20, vlan: -1}},
		{"sll netlink", LinkTypeLinuxSLL, cat(sllHeader(4, arphrdNetlink, 0, nil, 0x0800), rawTCP), want{class: ClassNonIP, linkLen: 16, vlan: -1, pkt: PacketOutgoing}},

		{"version 5", LinkTypeRaw, withVersion(rawTCP, 0x55), want{class: ClassMalformed, linkLen: -1, vlan: -1, netLen: 65}},
		{"ethertype ipv4 carrying version 6", LinkTypeEthernet, cat([]byte(macB), []byte(macA), []byte{0x08, 0x00}, withVersion(rawTCP, 0x60)), want{class: ClassMalformed, linkLen: 14, vlan: -1, netLen: 65}},
		{"linktype ipv4 carrying version 6", LinkTypeIPv4, withVersion(rawTCP, 0x60), want{class: ClassMalformed, linkLen: -1, vlan: -1, netLen: 65}},
		{"ihl 4", LinkTypeRaw, withVersion(rawTCP, 0x44), want{class: ClassMalformed, linkLen: -1, vlan: -1, family: 4, ihl: 4, netLen: 65}},
		{"total length below header", LinkTypeRaw, withTotLen(rawTCP, 19), want{class: ClassMalformed, linkLen: -1, vlan: -1, family: 4, ihl: 5, netLen: 65}},
		{"total length 0 (tso capture)", LinkTypeRaw, withTotLen(rawTCP, 0), want{class: ClassMalformed, linkLen: -1, vlan: -1, family: 4, ihl: 5, netLen: 65}},

		{"total length beyond capture", LinkTypeRaw, withTotLen(rawTCP, 1500), want{
			class: ClassTruncated, linkLen: -1, vlan: -1, family: 4, src: "198.51.100.7", dst: "192.0.2.10",
			proto: ProtoTCP, len: 1500, netLen: 65, ttl: 52, tos: 0x10, ihl: 5, id: 31337, frag: IPv4DF, l4Len: 45,
			hasPorts: true, sport: 51514, dport: 22, hasTransport: true, flags: TCPSyn, payload: []byte("hello"),
		}},
		{"empty frame", LinkTypeEthernet, []byte{}, want{class: ClassTruncated, linkLen: 0, vlan: -1}},
		{"cut ethernet header", LinkTypeEthernet, []byte(macBcast), want{class: ClassTruncated, linkLen: 6, vlan: -1}},
		{"cut vlan tag", LinkTypeEthernet, cat([]byte(macB), []byte(macA), []byte{0x81, 0x00, 0x00, 0x05}), want{class: ClassTruncated, linkLen: 16, vlan: -1}},
		{"cut inner vlan tag", LinkTypeEthernet, qinq[:20], want{class: ClassTruncated, linkLen: 20, vlan: 200}},
		{"cut sll header", LinkTypeLinuxSLL, sllHeader(0, 1, 6, macA, 0x0800)[:15], want{class: ClassTruncated, linkLen: 15, vlan: -1}},
		{"cut sll2 header", LinkTypeLinuxSLL2, sll2(0, 1, layers.EthernetTypeIPv4, rawTCP)[:19], want{class: ClassTruncated, linkLen: 19, vlan: -1}},
		{"link header only", LinkTypeEthernet, ethTCPFrame(t)[:14], want{class: ClassTruncated, linkLen: 14, vlan: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := mustDecoder(t, tc.lt)
			orig := append([]byte(nil), tc.data...)
			var v View
			d.Decode(tc.data, &v)
			checkView(t, tc.data, &v, tc.want)
			if v.LinkType != tc.lt {
				t.Errorf("LinkType = %d, want %d", v.LinkType, tc.lt)
			}
			if !bytes.Equal(tc.data, orig) {
				t.Errorf("Decode modified the frame")
			}
			checkInvariants(t, tc.data, &v)
		})
	}
}

func net4(a, b, c, d byte) []byte { return []byte{a, b, c, d} }

// tcpBytes is a 20-byte TCP header with ports 0x1234 -> 0x5678 and the
// given data offset.
func tcpBytes(doff byte) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:2], 0x1234)
	binary.BigEndian.PutUint16(h[2:4], 0x5678)
	h[12] = doff << 4
	h[13] = TCPAck
	return h
}

// TestDecodeTruncatedAtEveryLength cuts an Ethernet frame carrying a TCP
// segment with IP options and TCP options at every length and checks the
// view against the layout the frame was built with: 14 link bytes, 24 IP
// header bytes, 40 TCP header bytes, 5 payload bytes.
func TestDecodeTruncatedAtEveryLength(t *testing.T) {
	ip, tcp, pl := sshSYN()
	ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
	full := serialize(t, ethHdr(macB, layers.EthernetTypeIPv4), ip, tcp, pl)
	const link, iph, tcph, total = 14, 24, 40, 24 + 40 + 5
	if len(full) != link+total {
		t.Fatalf("built frame is %d bytes, want %d", len(full), link+total)
	}
	d := mustDecoder(t, LinkTypeEthernet)
	var v View
	for n := 0; n <= len(full); n++ {
		data := full[:n]
		d.Decode(data, &v)
		ipn := n - link // captured IP bytes
		wantClass := ClassTruncated
		if ipn >= total {
			wantClass = ClassOK
		}
		if v.Class != wantClass {
			t.Errorf("len %d: Class = %v, want %v", n, v.Class, wantClass)
		}
		checkInvariants(t, data, &v)
		if n < link {
			if v.Network != nil || len(v.Link) != n {
				t.Errorf("len %d: Network = %x, Link = %x, want no network and the cut link header", n, v.Network, v.Link)
			}
			continue
		}
		if len(v.Link) != link || len(v.Network) != ipn {
			t.Errorf("len %d: len(Link), len(Network) = %d, %d, want %d, %d", n, len(v.Link), len(v.Network), link, ipn)
		}
		if wantLen := map[bool]int{true: total, false: 0}[ipn >= 4]; v.Len != wantLen {
			t.Errorf("len %d: Len = %d, want %d", n, v.Len, wantLen)
		}
		if got, want := v.Src.IsValid(), ipn >= 20; got != want {
			t.Errorf("len %d: Src valid = %v, want %v", n, got, want)
		}
		if ipn >= 20 && (v.TTL != 52 || v.IPv4.ID != 31337 || v.Proto != ProtoTCP) {
			t.Errorf("len %d: TTL, ID, Proto = %d, %d, %d", n, v.TTL, v.IPv4.ID, v.Proto)
		}
		if wantOpt := min(max(ipn-20, 0), 4); len(v.IPv4.Options) != wantOpt {
			t.Errorf("len %d: len(Options) = %d, want %d", n, len(v.IPv4.Options), wantOpt)
		}
		if wantL4 := max(ipn-iph, 0); len(v.L4) != wantL4 {
			t.Errorf("len %d: len(L4) = %d, want %d", n, len(v.L4), wantL4)
		}
		if got, want := v.HasPorts, ipn >= iph+4; got != want {
			t.Errorf("len %d: HasPorts = %v, want %v", n, got, want)
		}
		if v.HasPorts && (v.SrcPort != 51514 || v.DstPort != 22) {
			t.Errorf("len %d: ports = %d, %d", n, v.SrcPort, v.DstPort)
		}
		if got, want := v.HasTransport, ipn >= iph+tcph; got != want {
			t.Errorf("len %d: HasTransport = %v, want %v", n, got, want)
		}
		if v.HasTransport && (v.TCPFlags != TCPSyn || !bytes.Equal(v.Payload, []byte("hello")[:ipn-iph-tcph])) {
			t.Errorf("len %d: TCPFlags, Payload = %#x, %q", n, v.TCPFlags, v.Payload)
		}
	}
}

// checkInvariants asserts what every View must satisfy whatever the input:
// every slice lies inside the frame, and the class agrees with the fields.
func checkInvariants(t *testing.T, data []byte, v *View) {
	t.Helper()
	if v.Class > ClassMalformed {
		t.Fatalf("Class = %v from a supported link type", v.Class)
	}
	for name, s := range map[string][]byte{"Link": v.Link, "Network": v.Network, "L4": v.L4, "Payload": v.Payload, "Options": v.IPv4.Options} {
		if _, ok := offsetIn(data, s); !ok {
			t.Fatalf("%s (%d bytes) is not inside the frame", name, len(s))
		}
	}
	if off, _ := offsetIn(data, v.Link); len(v.Link) > 0 && off != 0 {
		t.Fatalf("Link starts at %d", off)
	}
	if off, _ := offsetIn(data, v.Network); len(v.Network) > 0 && off != len(v.Link) {
		t.Fatalf("Network starts at %d, after a %d-byte link header", off, len(v.Link))
	}
	if v.VLAN < -1 || v.VLAN > 4095 || v.PktType > 7 {
		t.Fatalf("VLAN, PktType = %d, %d", v.VLAN, v.PktType)
	}
	hl := int(v.IPv4.IHL) * 4
	switch v.Class {
	case ClassNonIP:
		if v.Network != nil || v.Family != 0 || v.Len != 0 || v.Src.IsValid() {
			t.Fatalf("non-IP view has IP fields: %+v", v)
		}
	case ClassOK:
		if v.Family != 4 || v.Len != len(v.Network) || hl < 20 || len(v.Network) < hl || !v.Src.IsValid() {
			t.Fatalf("OK view: Family %d, Len %d, len(Network) %d, IHL %d", v.Family, v.Len, len(v.Network), v.IPv4.IHL)
		}
	case ClassTruncated:
		if v.Len != 0 && len(v.Network) >= v.Len {
			t.Fatalf("truncated view holds its whole datagram: Len %d, len(Network) %d", v.Len, len(v.Network))
		}
	case ClassMalformed:
		if v.L4 != nil || v.Len != 0 {
			t.Fatalf("malformed view has L4 or Len")
		}
	}
	if v.Len > 0 && len(v.Network) > v.Len {
		t.Fatalf("Network (%d) longer than total length %d", len(v.Network), v.Len)
	}
	if len(v.IPv4.Options) > 0 {
		if off, _ := offsetIn(v.Network, v.IPv4.Options); off != 20 || 20+len(v.IPv4.Options) > hl {
			t.Fatalf("Options at %d, %d bytes, IHL %d", off, len(v.IPv4.Options), v.IPv4.IHL)
		}
	}
	if v.L4 != nil {
		off, ok := offsetIn(v.Network, v.L4)
		if len(v.L4) == 0 {
			off = len(v.Network) // an empty tail has no address to compare
		}
		if !ok || off != hl || off+len(v.L4) != len(v.Network) {
			t.Fatalf("L4 is not Network[IHL*4:]")
		}
	}
	if v.HasPorts {
		if (v.Proto != ProtoTCP && v.Proto != ProtoUDP) || v.FragOff() != 0 || len(v.L4) < 4 ||
			v.SrcPort != binary.BigEndian.Uint16(v.L4) || v.DstPort != binary.BigEndian.Uint16(v.L4[2:]) {
			t.Fatalf("HasPorts with proto %d, fragoff %d, %d L4 bytes, ports %d %d", v.Proto, v.FragOff(), len(v.L4), v.SrcPort, v.DstPort)
		}
	} else if v.SrcPort != 0 || v.DstPort != 0 {
		t.Fatalf("ports set without HasPorts")
	}
	if !v.HasTransport {
		if v.Payload != nil || v.TCPFlags != 0 || v.ICMPType != 0 || v.ICMPCode != 0 {
			t.Fatalf("transport fields set without HasTransport")
		}
		return
	}
	if v.FragOff() != 0 {
		t.Fatalf("HasTransport on a non-first fragment")
	}
	if off, ok := offsetIn(v.L4, v.Payload); !ok || (len(v.Payload) > 0 && off+len(v.Payload) != len(v.L4)) {
		t.Fatalf("Payload is not a tail of L4")
	}
	th := len(v.L4) - len(v.Payload)
	switch v.Proto {
	case ProtoTCP:
		if th < 20 || th != int(v.L4[12]>>4)*4 || v.TCPFlags != v.L4[13] {
			t.Fatalf("TCP header %d bytes, doff %d, flags %#x", th, v.L4[12]>>4, v.TCPFlags)
		}
	case ProtoUDP:
		if th != 8 {
			t.Fatalf("UDP header %d bytes", th)
		}
	case ProtoICMP:
		if th != 8 || v.ICMPType != v.L4[0] || v.ICMPCode != v.L4[1] {
			t.Fatalf("ICMP header %d bytes, type %d code %d", th, v.ICMPType, v.ICMPCode)
		}
	default:
		t.Fatalf("HasTransport for protocol %d", v.Proto)
	}
}

func TestNewDecoderUnsupported(t *testing.T) {
	for _, lt := range []uint16{0, 105, 127, 20, 0xffff} {
		if _, err := NewDecoder(lt); err == nil {
			t.Errorf("NewDecoder(%d) succeeded", lt)
		}
	}
}

// kernelDecTTL is ip_decrease_ttl from include/net/ip.h, transcribed as an
// independent oracle: add htons(0x0100) to the checksum and fold the carry
// the way the kernel does.
func kernelDecTTL(h []byte) {
	check := uint32(binary.BigEndian.Uint16(h[10:12])) + 0x0100
	if check >= 0xffff {
		check++
	}
	binary.BigEndian.PutUint16(h[10:12], uint16(check))
	h[8]--
}

func fullChecksum(h []byte) uint16 {
	c := append([]byte(nil), h...)
	c[10], c[11] = 0, 0
	return ^ipv4HeaderSum(c)
}

func TestDecTTL(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	d := mustDecoder(t, LinkTypeRaw)
	var v View
	edge := 0
	for i := 0; i < 400000; i++ {
		ihl := 5 + rng.IntN(11)
		h := make([]byte, ihl*4+8)
		for j := range h {
			h[j] = byte(rng.Uint32())
		}
		h[0] = 0x40 | byte(ihl)
		binary.BigEndian.PutUint16(h[2:4], uint16(len(h)))
		binary.BigEndian.PutUint16(h[6:8], 0)
		h[8] = byte(2 + rng.IntN(254))
		binary.BigEndian.PutUint16(h[10:12], fullChecksum(h[:ihl*4]))
		oracle := append([]byte(nil), h...)
		kernelDecTTL(oracle)

		d.Decode(h, &v)
		if v.Class != ClassOK || !v.IPv4ChecksumValid() {
			t.Fatalf("setup: class %v, checksum valid %v", v.Class, v.IPv4ChecksumValid())
		}
		ttl := v.TTL
		v.DecTTL()
		got := binary.BigEndian.Uint16(h[10:12])
		if want := fullChecksum(h[:ihl*4]); got != want {
			t.Fatalf("header %x: checksum after DecTTL %#04x, full recomputation %#04x", h[:ihl*4], got, want)
		}
		if !bytes.Equal(h, oracle) {
			t.Fatalf("header %x differs from the kernel's ip_decrease_ttl result %x", h, oracle)
		}
		if h[8] != ttl-1 || v.TTL != ttl-1 || !v.IPv4ChecksumValid() {
			t.Fatalf("TTL %d -> %d (view %d)", ttl, h[8], v.TTL)
		}
		if got == 0 || got >= 0xff00 {
			edge++
		}
	}
	if edge == 0 {
		t.Errorf("no checksum near the 0x0000/0xffff wrap was exercised")
	}

	// No complete header, or TTL 0: nothing changes.
	for _, b := range [][]byte{{0x45, 0, 0, 20, 0, 0, 0, 0, 0}, withTTL(t, 0)} {
		d.Decode(b, &v)
		before := append([]byte(nil), b...)
		v.DecTTL()
		if !bytes.Equal(before, b) {
			t.Errorf("DecTTL modified %x", before)
		}
	}
}

func withTTL(t *testing.T, ttl uint8) []byte {
	ip := newIPv4(layers.IPProtocolUDP, ipA, ipB)
	ip.TTL = ttl
	udp := &layers.UDP{SrcPort: 1, DstPort: 2}
	udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, udp)
}

func TestIPv4ChecksumValid(t *testing.T) {
	ip, tcp, pl := sshSYN()
	ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
	raw := serialize(t, ip, tcp, pl) // gopacket computes the checksum
	d := mustDecoder(t, LinkTypeRaw)
	var v View
	d.Decode(raw, &v)
	if !v.IPv4ChecksumValid() {
		t.Fatalf("gopacket-built header reported invalid")
	}
	raw[22] ^= 0x01 // inside the options
	d.Decode(raw, &v)
	if v.IPv4ChecksumValid() {
		t.Fatalf("corrupted header reported valid")
	}
	d.Decode(raw[:22], &v)
	if v.IPv4ChecksumValid() {
		t.Fatalf("cut header reported valid")
	}
}

// TestDecodeReuse decodes frames of different shapes into one View in turn
// and checks that each result equals a decode into a fresh View: Reset
// leaves nothing of the previous packet behind.
func TestDecodeReuse(t *testing.T) {
	for lt, frames := range seedFrames(t) {
		d := mustDecoder(t, lt)
		var reused View
		for i := 0; i < 3; i++ {
			for j, f := range frames {
				d.Decode(f, &reused)
				var fresh View
				mustDecoder(t, lt).Decode(f, &fresh)
				if !viewsEqual(&reused, &fresh) {
					t.Fatalf("link type %d frame %d: reused view %+v, fresh %+v", lt, j, reused, fresh)
				}
			}
		}
	}
}

// viewsEqual compares views, treating a nil and an empty Options slice
// alike (Reset keeps the Options capacity).
func viewsEqual(a, b *View) bool {
	ac, bc := *a, *b
	if len(ac.IPv4.Options) == 0 && len(bc.IPv4.Options) == 0 {
		ac.IPv4.Options, bc.IPv4.Options = nil, nil
	}
	return reflect.DeepEqual(ac, bc)
}

func TestDecodeAllocs(t *testing.T) {
	for lt, frames := range seedFrames(t) {
		d := mustDecoder(t, lt)
		var v View
		for i, f := range frames {
			if n := testing.AllocsPerRun(50, func() { d.Decode(f, &v) }); n != 0 {
				t.Errorf("link type %d frame %d: %v allocs per Decode", lt, i, n)
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	lts := []uint16{LinkTypeEthernet, LinkTypeLinuxSLL, LinkTypeLinuxSLL2, LinkTypeRaw, LinkTypeIPv4, LinkTypeIPv6, LinkTypeRawDLT12, LinkTypeRawDLT14}
	idx := map[uint16]uint8{}
	decs := make([]*Decoder, len(lts))
	for i, lt := range lts {
		idx[lt] = uint8(i)
		decs[i] = mustDecoder(f, lt)
	}
	for lt, frames := range seedFrames(f) {
		for _, fr := range frames {
			f.Add(idx[lt], fr)
		}
	}
	other := ethTCPFrame(f)
	f.Fuzz(func(t *testing.T, sel uint8, data []byte) {
		i := int(sel) % len(lts)
		d := decs[i]
		orig := append([]byte(nil), data...)
		var v View
		d.Decode(data, &v)
		checkInvariants(t, data, &v)
		if !bytes.Equal(orig, data) {
			t.Fatalf("Decode modified its input")
		}
		if v.LinkType != lts[i] {
			t.Fatalf("LinkType %d, want %d", v.LinkType, lts[i])
		}
		// The same bytes decode the same into a reused view.
		var w View
		d.Decode(other, &w)
		d.Decode(data, &w)
		if !viewsEqual(&v, &w) {
			t.Fatalf("decode is not repeatable: %+v vs %+v", v, w)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	frame := ethTCPFrame(b)
	d := mustDecoder(b, LinkTypeEthernet)
	var v View
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		d.Decode(frame, &v)
	}
	if !v.HasTransport {
		b.Fatal("frame did not decode")
	}
}
