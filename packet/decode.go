package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Capture link types (pcap LINKTYPE_* numbers) that a Decoder accepts.
const (
	LinkTypeEthernet  uint16 = 1   // LINKTYPE_ETHERNET
	LinkTypeRawDLT12  uint16 = 12  // DLT_RAW as some systems numbered it in old files
	LinkTypeRawDLT14  uint16 = 14  // DLT_RAW on OpenBSD, likewise
	LinkTypeRaw       uint16 = 101 // LINKTYPE_RAW: IPv4 or IPv6, by the version nibble
	LinkTypeLinuxSLL  uint16 = 113 // LINKTYPE_LINUX_SLL
	LinkTypeIPv4      uint16 = 228 // LINKTYPE_IPV4
	LinkTypeIPv6      uint16 = 229 // LINKTYPE_IPV6 (decoded as ClassNonIP for now)
	LinkTypeLinuxSLL2 uint16 = 276 // LINKTYPE_LINUX_SLL2
)

// Ethernet types the decoder dispatches on.
const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
)

// Header sizes.
const (
	ethHeaderLen  = 14
	vlanTagLen    = 4
	sllHeaderLen  = 16
	ipv4MinHeader = 20
	tcpMinHeader  = 20
	udpHeaderLen  = 8
	icmpHeaderLen = 8
)

// linkKind is how a Decoder finds the network header.
type linkKind uint8

const (
	linkLayered linkKind = iota // Ethernet, SLL, SLL2 through a DecodingLayerParser
	linkRaw                     // raw IP, IPv4 or IPv6 by the version nibble
	linkIPv4                    // IPv4 only
	linkIPv6                    // IPv6 only
)

// errLinkShort is returned by the link-layer wrappers for a cut header. It is
// a preallocated value so that a truncated frame costs no allocation
// (gopacket's own layers build a new error each time).
var errLinkShort = errors.New("link-layer header truncated")

// Decoder fills Views from captured frames of one link type. It owns the
// gopacket layer structs it decodes into, so it is not safe for concurrent
// use: give each goroutine its own. Decode does not allocate.
type Decoder struct {
	linkType uint16
	kind     linkKind
	parser   *gopacket.DecodingLayerParser
	decoded  []gopacket.LayerType

	eth  ethernetLayer
	vlan vlanLayer
	sll  sllLayer
	sll2 LinuxSLL2 // already allocation-free and panic-free
}

// NewDecoder returns a Decoder for frames of the given pcap link type:
// Ethernet (1), raw IP (101, and 12 and 14 as old files number DLT_RAW),
// LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229), Linux SLL (113) and SLL2 (276).
func NewDecoder(linkType uint16) (*Decoder, error) {
	d := &Decoder{linkType: linkType}
	var first gopacket.LayerType
	switch linkType {
	case LinkTypeEthernet:
		first = layers.LayerTypeEthernet
	case LinkTypeLinuxSLL:
		first = layers.LayerTypeLinuxSLL
	case LinkTypeLinuxSLL2:
		first = LayerTypeLinuxSLL2
	case LinkTypeRaw, LinkTypeRawDLT12, LinkTypeRawDLT14:
		d.kind = linkRaw
		return d, nil
	case LinkTypeIPv4:
		d.kind = linkIPv4
		return d, nil
	case LinkTypeIPv6:
		d.kind = linkIPv6
		return d, nil
	default:
		return nil, fmt.Errorf("packet: unsupported link type %d", linkType)
	}
	// VLAN tags follow Ethernet and may follow SLL/SLL2 too (a capture on
	// the "any" device of a trunk port), so every parser knows them.
	d.parser = gopacket.NewDecodingLayerParser(first)
	d.parser.SetDecodingLayerContainer(gopacket.DecodingLayerArray(nil))
	d.parser.AddDecodingLayer(&d.eth)
	d.parser.AddDecodingLayer(&d.vlan)
	d.parser.AddDecodingLayer(&d.sll)
	d.parser.AddDecodingLayer(&d.sll2)
	// IPv4 and everything else end the link walk: the parser stops at the
	// first layer type it has no decoder for.
	d.parser.IgnoreUnsupported = true
	// Our wrappers never panic (FuzzDecode checks that); letting gopacket
	// recover would turn a bug into a silently misclassified packet.
	d.parser.IgnorePanic = true
	d.decoded = make([]gopacket.LayerType, 0, 8)
	return d, nil
}

// LinkType returns the link type the Decoder was made for.
func (d *Decoder) LinkType() uint16 { return d.linkType }

// Decode resets v and fills it from one captured frame. Slices in v alias
// data. Decode never panics on any input and does not allocate.
func (d *Decoder) Decode(data []byte, v *View) {
	v.Reset()
	v.LinkType = d.linkType
	switch d.kind {
	case linkRaw:
		if len(data) > 0 && data[0]>>4 == 6 {
			v.Class = ClassNonIP
			return
		}
		decodeIPv4(data, v)
		return
	case linkIPv4:
		decodeIPv4(data, v)
		return
	case linkIPv6:
		v.Class = ClassNonIP
		return
	}

	d.vlan.outer = -1
	err := d.parser.DecodeLayers(data, &d.decoded)
	// The link header is everything the decoded layers consumed.
	hdr := 0
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeEthernet:
			hdr += ethHeaderLen
		case layers.LayerTypeDot1Q:
			hdr += vlanTagLen
		case layers.LayerTypeLinuxSLL:
			hdr += sllHeaderLen
		case LayerTypeLinuxSLL2:
			hdr += sll2HeaderLen
		}
	}
	v.VLAN = d.vlan.outer
	if err != nil || len(d.decoded) == 0 {
		// A cut link header (or VLAN tag): no network layer to speak of.
		v.Link = data
		v.Class = ClassTruncated
		if len(d.decoded) > 0 {
			v.PktType = d.pktType(d.decoded[0])
		}
		return
	}
	v.Link = data[:hdr]
	v.PktType = d.pktType(d.decoded[0])

	var etype layers.EthernetType
	switch d.decoded[len(d.decoded)-1] {
	case layers.LayerTypeEthernet:
		etype = d.eth.EthernetType
	case layers.LayerTypeDot1Q:
		etype = d.vlan.Type
	case layers.LayerTypeLinuxSLL:
		etype = d.sll.EthernetType
		if d.sll.AddrType == arphrdFRAD || d.sll.AddrType == arphrdRadiotap || d.sll.AddrType == arphrdNetlink {
			etype = 0
		}
	case LayerTypeLinuxSLL2:
		etype = d.sll2.ProtocolType
		if d.sll2.NextLayerType() == gopacket.LayerTypePayload {
			etype = 0
		}
	}
	if etype != etherTypeIPv4 {
		// ARP, IPv6, LLC, MPLS, ... (LLC frames carry a length, which
		// gopacket reports as EthernetTypeLLC.)
		v.Class = ClassNonIP
		return
	}
	decodeIPv4(data[hdr:], v)
}

// pktType derives skb->pkt_type from the outermost link header: the
// cooked headers carry it, Ethernet's destination address implies it the
// way eth_type_trans does. Without the receiving device's address a
// unicast frame counts as PacketHost.
func (d *Decoder) pktType(first gopacket.LayerType) uint8 {
	switch first {
	case layers.LayerTypeEthernet:
		dst := d.eth.Contents[:6]
		if dst[0]&1 == 0 {
			return PacketHost
		}
		if dst[0]&dst[1]&dst[2]&dst[3]&dst[4]&dst[5] == 0xff {
			return PacketBroadcast
		}
		return PacketMulticast
	case layers.LayerTypeLinuxSLL:
		return kernelPktType(uint16(d.sll.PacketType))
	case LayerTypeLinuxSLL2:
		return kernelPktType(uint16(d.sll2.PacketType))
	}
	return PacketHost
}

// kernelPktType keeps the PACKET_* values the kernel defines (0..7) and maps
// anything else to PacketHost.
func kernelPktType(t uint16) uint8 {
	if t > 7 {
		return PacketHost
	}
	return uint8(t)
}

// decodeIPv4 fills v from b, which starts at the IPv4 header.
//
// The IPv4 header is decoded by hand rather than with gopacket's
// layers.IPv4 because that decoder cannot give the kernel's semantics:
// it takes a total length of 0 to mean "the whole buffer" (a TSO capture
// quirk) where ip_rcv drops the packet, it returns errors rather than the
// classes matches need, it parses options into a freshly allocated slice,
// and it rejects option lists the kernel would pass to the hooks (options
// are only validated later, in ip_rcv_finish/ip_options_compile). The
// checks below follow ip_rcv_core: version and IHL, then the header must be
// present, then total length against the header and the captured bytes.
// The header checksum is not verified here; see IPv4ChecksumValid.
func decodeIPv4(b []byte, v *View) {
	if len(b) == 0 {
		v.Class = ClassTruncated
		return
	}
	ihl := b[0] & 0x0f
	if b[0]>>4 != 4 {
		v.Class = ClassMalformed
		v.Network = b
		return
	}
	v.Family = 4
	v.IPv4.IHL = ihl
	if ihl < 5 {
		v.Class = ClassMalformed
		v.Network = b
		return
	}
	if len(b) < 4 {
		// The total length is not even captured.
		v.Class = ClassTruncated
		v.Network = b
		if len(b) >= 2 {
			v.TOS = b[1]
		}
		return
	}
	hl := int(ihl) * 4
	tot := int(binary.BigEndian.Uint16(b[2:4]))
	if tot < hl {
		v.Class = ClassMalformed
		v.Network = b
		return
	}
	if len(b) > tot {
		b = b[:tot] // link-layer padding or trailer
	}
	v.Network = b
	v.Len = tot
	v.TOS = b[1]
	if len(b) < ipv4MinHeader {
		v.Class = ClassTruncated
		return
	}
	v.IPv4.ID = binary.BigEndian.Uint16(b[4:6])
	v.IPv4.FragWord = binary.BigEndian.Uint16(b[6:8])
	v.TTL = b[8]
	v.Proto = b[9]
	v.Src = netip.AddrFrom4([4]byte(b[12:16]))
	v.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	if len(b) < hl {
		v.Class = ClassTruncated
		if len(b) > ipv4MinHeader {
			v.IPv4.Options = b[ipv4MinHeader:]
		}
		return
	}
	if hl > ipv4MinHeader {
		v.IPv4.Options = b[ipv4MinHeader:hl]
	}
	if len(b) < tot {
		// Snap length: keep decoding what was captured.
		v.Class = ClassTruncated
	}
	l4 := b[hl:]
	v.L4 = l4
	if v.IPv4.FragWord&IPv4OffMask != 0 {
		return // non-first fragment: no transport header
	}
	switch v.Proto {
	case ProtoTCP:
		if len(l4) >= 4 {
			v.HasPorts = true
			v.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			v.DstPort = binary.BigEndian.Uint16(l4[2:4])
		}
		if len(l4) >= tcpMinHeader {
			doff := int(l4[12]>>4) * 4
			if doff >= tcpMinHeader && doff <= len(l4) {
				v.HasTransport = true
				v.TCPFlags = l4[13]
				v.Payload = l4[doff:]
			}
		}
	case ProtoUDP:
		if len(l4) >= 4 {
			v.HasPorts = true
			v.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			v.DstPort = binary.BigEndian.Uint16(l4[2:4])
		}
		if len(l4) >= udpHeaderLen {
			v.HasTransport = true
			v.Payload = l4[udpHeaderLen:]
		}
	case ProtoICMP:
		if len(l4) >= icmpHeaderLen {
			v.HasTransport = true
			v.ICMPType = l4[0]
			v.ICMPCode = l4[1]
			v.Payload = l4[icmpHeaderLen:]
		}
	}
}

// DecTTL applies what ip_forward does before the FORWARD hook: it
// decrements the IPv4 TTL by one and updates the header checksum
// incrementally (RFC 1624, eqn. 3), in place in v.Network, which the caller
// guarantees is writable. The kernel never forwards a packet whose TTL is
// 1 or less (it answers time-exceeded instead); callers check that first.
// DecTTL does nothing when there is no complete IPv4 fixed header or the
// TTL is already 0.
func (v *View) DecTTL() {
	if v.Family != 4 || len(v.Network) < ipv4MinHeader ||
		(v.Class != ClassOK && v.Class != ClassTruncated) {
		return
	}
	n := v.Network
	ttl := n[8]
	if ttl == 0 {
		return
	}
	oldWord := uint16(ttl)<<8 | uint16(n[9])
	newWord := oldWord - 0x0100
	// HC' = ~(~HC + ~m + m')
	sum := uint32(^binary.BigEndian.Uint16(n[10:12])) + uint32(^oldWord) + uint32(newWord)
	sum = sum&0xffff + sum>>16
	sum = sum&0xffff + sum>>16
	binary.BigEndian.PutUint16(n[10:12], ^uint16(sum))
	n[8] = ttl - 1
	v.TTL = ttl - 1
}

// IPv4ChecksumValid reports whether the IPv4 header checksum is correct, the
// check ip_rcv_core makes before any hook runs. It is false when the header
// is not completely captured or v is not IPv4. Decode does not apply it
// because captures taken on a sending host, and hand-built test frames,
// often carry checksums that were never filled in.
func (v *View) IPv4ChecksumValid() bool {
	hl := int(v.IPv4.IHL) * 4
	if v.Family != 4 || hl < ipv4MinHeader || len(v.Network) < hl {
		return false
	}
	return ipv4HeaderSum(v.Network[:hl]) == 0xffff
}

// ipv4HeaderSum is the ones' complement sum (folded) of the 16-bit words of
// h, an IPv4 header whose length is a multiple of 4.
func ipv4HeaderSum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// The wrappers below put gopacket's link layers into the parser with two
// changes: a short header is reported with the preallocated errLinkShort
// (gopacket allocates an error per call), and inputs on which gopacket's
// decoder would panic or misread are handled first.

// ethernetLayer is layers.Ethernet with an allocation-free length check.
type ethernetLayer struct{ layers.Ethernet }

func (e *ethernetLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < ethHeaderLen {
		df.SetTruncated()
		return errLinkShort
	}
	return e.Ethernet.DecodeFromBytes(data, df)
}

// vlanLayer is layers.Dot1Q (which gopacket also uses for 802.1ad QinQ,
// ethertype 0x88a8) that remembers the outermost VLAN id of the frame.
type vlanLayer struct {
	layers.Dot1Q
	outer int16 // -1 until the first tag of a frame is decoded
}

func (q *vlanLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < vlanTagLen {
		df.SetTruncated()
		return errLinkShort
	}
	if err := q.Dot1Q.DecodeFromBytes(data, df); err != nil {
		return err
	}
	if q.outer < 0 {
		q.outer = int16(q.VLANIdentifier)
	}
	return nil
}

// sllLayer is layers.LinuxSLL made safe for an address length over 8:
// gopacket slices the address as data[6:6+AddrLen] and panics when that runs
// past the frame, where the format says only 8 bytes are present.
type sllLayer struct{ layers.LinuxSLL }

func (s *sllLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < sllHeaderLen {
		df.SetTruncated()
		return errLinkShort
	}
	alen := binary.BigEndian.Uint16(data[4:6])
	if alen <= 8 {
		return s.LinuxSLL.DecodeFromBytes(data, df)
	}
	s.PacketType = layers.LinuxSLLPacketType(binary.BigEndian.Uint16(data[0:2]))
	s.AddrType = binary.BigEndian.Uint16(data[2:4])
	s.AddrLen = alen
	s.Addr = data[6:14]
	s.EthernetType = layers.EthernetType(binary.BigEndian.Uint16(data[14:16]))
	s.BaseLayer = layers.BaseLayer{Contents: data[:sllHeaderLen], Payload: data[sllHeaderLen:]}
	return nil
}
