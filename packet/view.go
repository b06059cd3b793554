// Package packet holds the decoded view of one packet that every other part
// of qtables reads: the evaluator, the match extensions, the flow table, the
// live queue and the offline capture reader.
//
// A View is filled once per packet, in place, without allocating: it records
// offsets into the caller's bytes and a few header fields that matches read
// often. Nothing downstream re-parses the packet. The package imports no
// other qtables package so that all of them can share it.
//
// The view is family-agnostic where the rule language is (addresses are
// netip.Addr, the transport header is a slice); IPv4-only header fields are
// grouped so that an IPv6 decoder can fill its own without a rewrite.
package packet

import (
	"net/netip"
	"time"
)

// Class says how far decoding got. Matches only read fields that the class
// promises; a malformed packet is classified, never a reason to panic.
type Class uint8

const (
	// ClassOK: a well-formed IP datagram whose network header was decoded.
	// The transport header may still be short (see L4).
	ClassOK Class = iota
	// ClassNonIP: the link layer carries something other than IPv4 (ARP,
	// IPv6 until it is supported, MPLS, ...). No IP field is valid.
	ClassNonIP
	// ClassTruncated: the capture holds fewer bytes than the headers claim
	// (snap length, a cut frame). Fields decoded before the cut are valid.
	ClassTruncated
	// ClassMalformed: a header is internally inconsistent (IPv4 version or
	// IHL wrong, total length shorter than the header). The kernel's IP
	// stack drops such packets before any hook sees them.
	ClassMalformed
	// ClassUnsupportedLink: the capture's link type is not one qtables decodes.
	ClassUnsupportedLink
)

var classNames = [...]string{"ok", "non-ip", "truncated", "malformed", "unsupported-link"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// IP protocol numbers used by the decoder and the matches.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// TCP flag bits as they appear in byte 13 of the TCP header.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
	TCPEce = 0x40
	TCPCwr = 0x80
)

// IPv4 flag bits of the fragment word (host order, in View.FragWord).
const (
	IPv4Reserved = 0x8000 // "CE" in the kernel's LOG output
	IPv4DF       = 0x4000
	IPv4MF       = 0x2000
	IPv4OffMask  = 0x1fff
)

// View is the decoded form of one packet. The zero View is empty; Reset
// clears one for reuse. Slices alias the bytes passed to the decoder: a View
// is valid only while those bytes are.
type View struct {
	// Timestamp is the capture time (offline) or arrival time (live).
	Timestamp time.Time
	// Class says which fields below are valid.
	Class Class

	// Link is the link-layer header as captured (Ethernet with any 802.1Q
	// tags, SLL, SLL2), or nil for raw IP. LOG prints it as MAC=.
	Link []byte
	// LinkType is the capture's link type number (pcap LINKTYPE_*).
	LinkType uint16
	// VLAN is the outermost 802.1Q VLAN id, or -1 when untagged.
	VLAN int16
	// PktType is the kernel's skb->pkt_type as the receiver would classify
	// the frame (PacketHost, PacketBroadcast, ...), derived from the link
	// destination; PacketHost when unknown.
	PktType uint8

	// Network is the IP datagram as the hook sees it: from the first byte of
	// the IP header to the end of the datagram (total length), never longer.
	Network []byte
	// Family is 4 for IPv4 (6 reserved for IPv6).
	Family uint8
	Src    netip.Addr
	Dst    netip.Addr
	// Proto is the transport protocol number (IPv4 protocol field).
	Proto uint8
	// Len is the datagram length the kernel counts in byte counters: the
	// IPv4 total length field.
	Len int
	TTL uint8
	TOS uint8
	// SrcPort and DstPort are valid when HasPorts is true (TCP or UDP,
	// first fragment, enough bytes). They sit beside the addresses and
	// the protocol, in the cache line that evaluation reads anyway.
	SrcPort, DstPort uint16
	HasPorts         bool
	// IPv4 holds the fields that only IPv4 has.
	IPv4 IPv4Fields

	// L4 is the transport header and everything after it that was captured
	// (Network[IHL*4:]). Empty for non-first fragments' headers as seen by
	// the kernel is still the bytes at that offset: matches check FragOff.
	L4 []byte
	// TCPFlags is byte 13 of the TCP header when Proto is TCP and the
	// header is complete (HasTransport).
	TCPFlags uint8
	// ICMPType and ICMPCode are valid for ICMP with HasTransport.
	ICMPType, ICMPCode uint8
	// HasTransport reports that the full fixed transport header (20 bytes
	// TCP, 8 UDP, 8 ICMP) is present in a first fragment.
	HasTransport bool
	// Payload is the transport payload (after TCP options, the UDP header
	// or the ICMP header), empty when HasTransport is false.
	Payload []byte
}

// IPv4Fields are the IPv4 header fields that have no IPv6 counterpart.
type IPv4Fields struct {
	IHL      uint8  // header length in 32-bit words
	ID       uint16 // identification
	FragWord uint16 // flags and fragment offset, host order
	Options  []byte // option bytes (IHL > 5), aliasing Network
}

// FragOff returns the fragment offset in 8-byte units (0 for unfragmented
// packets and first fragments), the kernel's fragoff.
func (v *View) FragOff() uint16 { return v.IPv4.FragWord & IPv4OffMask }

// Reset clears v for reuse without releasing the capacity of its slices.
func (v *View) Reset() {
	opts := v.IPv4.Options[:0]
	*v = View{VLAN: -1}
	v.IPv4.Options = opts
}

// Packet types (skb->pkt_type), as in linux/if_packet.h.
const (
	PacketHost      = 0
	PacketBroadcast = 1
	PacketMulticast = 2
	PacketOtherHost = 3
	PacketOutgoing  = 4
)
