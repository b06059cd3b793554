package packet

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Frames for the tests, built with gopacket's layers so that the bytes come
// from an independent encoder rather than from the decoder under test.

var (
	macA     = net.HardwareAddr{0x52, 0x54, 0x00, 0x11, 0x22, 0x33}
	macB     = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}
	macBcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	macMcast = net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}

	ipA = net.IP{198, 51, 100, 7}
	ipB = net.IP{192, 0, 2, 10}
)

// serialize encodes ls with lengths and checksums filled in.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func newIPv4(proto layers.IPProtocol, src, dst net.IP) *layers.IPv4 {
	return &layers.IPv4{
		Version: 4, TTL: 64, Id: 4242, Protocol: proto,
		SrcIP: src, DstIP: dst,
	}
}

// tcpSYNOptions are 20 bytes of options: MSS 1460, SACK permitted,
// timestamps, NOP, window scale 7. With them the TCP header is 40 bytes.
func tcpSYNOptions() []layers.TCPOption {
	return []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 0, 1, 0, 0, 0, 0}},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
	}
}

// sshSYN returns the IPv4 layers of the SYN from the spec's LOG example:
// 198.51.100.7:51514 -> 192.0.2.10:22, TTL 52, ID 31337, DF, with 20 bytes
// of TCP options and the payload "hello". IP total length 20+40+5 = 65.
func sshSYN() (*layers.IPv4, *layers.TCP, gopacket.Payload) {
	ip := newIPv4(layers.IPProtocolTCP, ipA, ipB)
	ip.TTL, ip.Id, ip.Flags, ip.TOS = 52, 31337, layers.IPv4DontFragment, 0x10
	tcp := &layers.TCP{SrcPort: 51514, DstPort: 22, SYN: true, Window: 64240, Seq: 1, Options: tcpSYNOptions()}
	tcp.SetNetworkLayerForChecksum(ip)
	return ip, tcp, gopacket.Payload("hello")
}

func ethHdr(dst net.HardwareAddr, et layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: macA, DstMAC: dst, EthernetType: et}
}

// sllHeader builds a LINKTYPE_LINUX_SLL header (gopacket's LinuxSLL cannot
// serialize): packet type, ARPHRD type, address length, 8 address bytes,
// protocol.
func sllHeader(pktType, hatype, alen uint16, addr []byte, proto uint16) []byte {
	h := make([]byte, 16)
	binary.BigEndian.PutUint16(h[0:2], pktType)
	binary.BigEndian.PutUint16(h[2:4], hatype)
	binary.BigEndian.PutUint16(h[4:6], alen)
	copy(h[6:14], addr)
	binary.BigEndian.PutUint16(h[14:16], proto)
	return h
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ethTCPFrame is the SSH SYN in an Ethernet frame: 14 + 65 = 79 bytes.
func ethTCPFrame(t testing.TB) []byte {
	ip, tcp, pl := sshSYN()
	return serialize(t, ethHdr(macB, layers.EthernetTypeIPv4), ip, tcp, pl)
}

// seedFrames returns a variety of frames for each supported link type, used
// as fuzz seeds and for the allocation test.
func seedFrames(t testing.TB) map[uint16][][]byte {
	ip, tcp, pl := sshSYN()
	rawTCP := serialize(t, ip, tcp, pl)

	ipo := newIPv4(layers.IPProtocolUDP, ipB, ipA)
	ipo.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
	udp := &layers.UDP{SrcPort: 40123, DstPort: 53}
	udp.SetNetworkLayerForChecksum(ipo)
	rawUDPOpt := serialize(t, ipo, udp, gopacket.Payload("query"))

	ipi := newIPv4(layers.IPProtocolICMPv4, ipB, ipA)
	rawICMP := serialize(t, ipi, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 4711, Seq: 1}, gopacket.Payload("ping"))

	ipf := newIPv4(layers.IPProtocolTCP, ipA, ipB)
	ipf.FragOffset = 185
	rawFrag := serialize(t, ipf, gopacket.Payload(make([]byte, 24)))

	raws := [][]byte{rawTCP, rawUDPOpt, rawICMP, rawFrag, rawTCP[:30], {0x45}, {}}
	out := map[uint16][][]byte{}
	for _, r := range raws {
		out[LinkTypeRaw] = append(out[LinkTypeRaw], r)
		out[LinkTypeIPv4] = append(out[LinkTypeIPv4], r)
		out[LinkTypeRawDLT12] = append(out[LinkTypeRawDLT12], r)
		out[LinkTypeRawDLT14] = append(out[LinkTypeRawDLT14], r)
		out[LinkTypeIPv6] = append(out[LinkTypeIPv6], r)
		eth := cat([]byte(macB), []byte(macA), []byte{0x08, 0x00}, r)
		vlan := cat([]byte(macB), []byte(macA), []byte{0x88, 0xa8, 0x00, 0xc8, 0x81, 0x00, 0x01, 0x2c, 0x08, 0x00}, r)
		out[LinkTypeEthernet] = append(out[LinkTypeEthernet], eth, vlan)
		out[LinkTypeLinuxSLL] = append(out[LinkTypeLinuxSLL], cat(sllHeader(4, 1, 6, macA, 0x0800), r))
		s2 := serialize(t, &LinuxSLL2{ProtocolType: layers.EthernetTypeIPv4, ARPHRDType: 1, PacketType: 3, Addr: macA, InterfaceIndex: 2}, gopacket.Payload(r))
		out[LinkTypeLinuxSLL2] = append(out[LinkTypeLinuxSLL2], s2)
	}
	out[LinkTypeEthernet] = append(out[LinkTypeEthernet],
		cat([]byte(macBcast), []byte(macA), []byte{0x08, 0x06}, make([]byte, 28)), // ARP
		cat([]byte(macB), []byte(macA), []byte{0x81, 0x00, 0x00}),                 // cut VLAN tag
		[]byte(macB),
	)
	out[LinkTypeLinuxSLL] = append(out[LinkTypeLinuxSLL], cat(sllHeader(0, 1, 300, macA, 0x0800), rawTCP), sllHeader(0, 1, 6, macA, 0x0800)[:10])
	out[LinkTypeLinuxSLL2] = append(out[LinkTypeLinuxSLL2], make([]byte, 19))
	return out
}
