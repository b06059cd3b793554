package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// sll2HeaderLen is the fixed size of a LINKTYPE_LINUX_SLL2 header.
const sll2HeaderLen = 20

// Linux ARPHRD_* device types whose SLL/SLL2 protocol field is not an
// Ethernet protocol type (see the tcpdump.org LINKTYPE_LINUX_SLL2 page).
const (
	arphrdFRAD     = 770 // payload is a Frame Relay LAPF frame
	arphrdRadiotap = 803 // payload is Radiotap + 802.11
	arphrdNetlink  = 824 // protocol is a Netlink protocol number
)

// LayerTypeLinuxSLL2 is the gopacket layer type of LinuxSLL2. gopacket
// v1.1.19 knows LINKTYPE_LINUX_SLL (113) but not its successor SLL2 (276),
// which libpcap ≥ 1.10 writes for captures on the "any" device. The number
// is in gopacket's fast application range (1000-1999).
var LayerTypeLinuxSLL2 = gopacket.RegisterLayerType(1276, gopacket.LayerTypeMetadata{
	Name:    "LinuxSLL2",
	Decoder: gopacket.DecodeFunc(decodeLinuxSLL2),
})

// LinuxSLL2 is the Linux "cooked" capture header, version 2
// (LINKTYPE_LINUX_SLL2): 20 bytes, all fields big-endian.
//
//	protocol type (2) | reserved, MBZ (2) | interface index (4) |
//	ARPHRD_ type (2) | packet type (1) | address length (1) | address (8)
//
// It implements gopacket.DecodingLayer, gopacket.Layer and
// gopacket.SerializableLayer so that it plugs into a DecodingLayerParser and
// into SerializeLayers (tests build SLL2 frames with it).
type LinuxSLL2 struct {
	layers.BaseLayer
	// ProtocolType is the Ethernet protocol type of the payload, or one of
	// the special values 1 (Novell 802.3), 4 (802.2 LLC), ... It is not an
	// Ethernet type for the ARPHRD_ types FRAD, RADIOTAP and NETLINK.
	ProtocolType layers.EthernetType
	// InterfaceIndex is the capturing interface's ifindex.
	InterfaceIndex uint32
	// ARPHRDType is the Linux ARPHRD_ device type (1 for Ethernet).
	ARPHRDType uint16
	// PacketType is skb->pkt_type (0 host, 1 broadcast, 2 multicast,
	// 3 otherhost, 4 outgoing).
	PacketType uint8
	// AddrLen is the sender's link-layer address length as captured; it
	// may exceed 8, in which case only 8 bytes are present.
	AddrLen uint8
	// Addr is the sender's link-layer address: the first min(AddrLen, 8)
	// bytes of the address field, aliasing the decoded data.
	Addr net.HardwareAddr
}

var errSLL2Short = errors.New("linux SLL2 header shorter than 20 bytes")

// LayerType returns LayerTypeLinuxSLL2.
func (s *LinuxSLL2) LayerType() gopacket.LayerType { return LayerTypeLinuxSLL2 }

// CanDecode returns LayerTypeLinuxSLL2.
func (s *LinuxSLL2) CanDecode() gopacket.LayerClass { return LayerTypeLinuxSLL2 }

// NextLayerType returns the layer type of the payload: the Ethernet type's
// layer, or the generic payload layer for device types whose protocol field
// is not an Ethernet type.
func (s *LinuxSLL2) NextLayerType() gopacket.LayerType {
	switch s.ARPHRDType {
	case arphrdFRAD, arphrdRadiotap, arphrdNetlink:
		return gopacket.LayerTypePayload
	}
	return s.ProtocolType.LayerType()
}

// DecodeFromBytes decodes a 20-byte SLL2 header. It neither allocates nor
// panics; a short header is reported through df.SetTruncated and an error.
func (s *LinuxSLL2) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < sll2HeaderLen {
		df.SetTruncated()
		return errSLL2Short
	}
	s.ProtocolType = layers.EthernetType(binary.BigEndian.Uint16(data[0:2]))
	s.InterfaceIndex = binary.BigEndian.Uint32(data[4:8])
	s.ARPHRDType = binary.BigEndian.Uint16(data[8:10])
	s.PacketType = data[10]
	s.AddrLen = data[11]
	s.Addr = net.HardwareAddr(data[12 : 12+min(int(s.AddrLen), 8)])
	s.BaseLayer = layers.BaseLayer{Contents: data[:sll2HeaderLen], Payload: data[sll2HeaderLen:]}
	return nil
}

// SerializeTo prepends the SLL2 header. An address longer than 8 bytes is
// cut to 8; AddrLen is written as given, or as len(Addr) when zero.
func (s *LinuxSLL2) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	h, err := b.PrependBytes(sll2HeaderLen)
	if err != nil {
		return err
	}
	clear(h)
	binary.BigEndian.PutUint16(h[0:2], uint16(s.ProtocolType))
	binary.BigEndian.PutUint32(h[4:8], s.InterfaceIndex)
	binary.BigEndian.PutUint16(h[8:10], s.ARPHRDType)
	h[10] = s.PacketType
	alen := s.AddrLen
	if alen == 0 {
		if len(s.Addr) > 0xff {
			return fmt.Errorf("linux SLL2: address of %d bytes is too long", len(s.Addr))
		}
		alen = uint8(len(s.Addr))
	}
	h[11] = alen
	copy(h[12:20], s.Addr)
	return nil
}

// decodeLinuxSLL2 lets gopacket.NewPacket decode SLL2 through the layer
// type registry.
func decodeLinuxSLL2(data []byte, p gopacket.PacketBuilder) error {
	s := &LinuxSLL2{}
	if err := s.DecodeFromBytes(data, p); err != nil {
		return err
	}
	p.AddLayer(s)
	return p.NextDecoder(s.NextLayerType())
}
