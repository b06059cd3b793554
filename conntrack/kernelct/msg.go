package kernelct

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	ct "github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// ctnetlink message types (enum cntl_msg_types) and the attributes the
// bridge sends (enum ctattr_type, ctattr_tuple, ctattr_ip, ctattr_l4proto
// in linux/netfilter/nfnetlink_conntrack.h). ti-mo/conntrack decodes
// replies and events; requests are built here because its Flow encoder
// has no CTA_MARK_MASK and omits a zero mark.
const (
	msgNew    uint8 = 0 // IPCTNL_MSG_CT_NEW: create, or update without NLM_F_CREATE
	msgGet    uint8 = 1 // IPCTNL_MSG_CT_GET
	msgDelete uint8 = 2 // IPCTNL_MSG_CT_DELETE

	ctaTupleOrig = 1
	ctaMark      = 8
	ctaMarkMask  = 21

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum        = 1
	ctaProtoSrcPort    = 2
	ctaProtoDstPort    = 3
	ctaProtoICMPID     = 4
	ctaProtoICMPType   = 5
	ctaProtoICMPCode   = 6
	ctaProtoICMPv6ID   = 7
	ctaProtoICMPv6Type = 8
	ctaProtoICMPv6Code = 9
)

// family returns the nfgenmsg family of a tuple: ctnetlink parses the
// tuple's addresses by it.
func family(t *Tuple) netfilter.ProtoFamily {
	if t.Family == 6 {
		return netfilter.ProtoIPv6
	}
	return netfilter.ProtoIPv4
}

// tupleAttr encodes t as the nested CTA_TUPLE_* attribute typ. The kernel
// finds a connection by either of its tuples, so t may be the original or
// the reply direction.
func tupleAttr(typ uint16, t *Tuple) (netfilter.Attribute, error) {
	if t.Family != 4 && t.Family != 6 {
		return netfilter.Attribute{}, fmt.Errorf("kernelct: tuple has no address family")
	}
	ip := netfilter.Attribute{Type: ctaTupleIP, Nested: true}
	if t.Family == 4 {
		if !netip.AddrFrom16(t.Src).Is4In6() || !netip.AddrFrom16(t.Dst).Is4In6() {
			return netfilter.Attribute{}, fmt.Errorf("kernelct: IPv4 tuple with addresses not in IPv4-mapped form")
		}
		src, dst := addrOf(t.Src, 4).As4(), addrOf(t.Dst, 4).As4()
		ip.Children = []netfilter.Attribute{
			{Type: ctaIPv4Src, Data: src[:]},
			{Type: ctaIPv4Dst, Data: dst[:]},
		}
	} else {
		src, dst := t.Src, t.Dst
		ip.Children = []netfilter.Attribute{
			{Type: ctaIPv6Src, Data: src[:]},
			{Type: ctaIPv6Dst, Data: dst[:]},
		}
	}
	proto := netfilter.Attribute{Type: ctaTupleProto, Nested: true,
		Children: []netfilter.Attribute{{Type: ctaProtoNum, Data: []byte{t.Proto}}}}
	switch {
	case t.Proto == protoICMP:
		proto.Children = append(proto.Children,
			netfilter.Attribute{Type: ctaProtoICMPID, Data: netfilter.Uint16Bytes(t.ICMPID())},
			netfilter.Attribute{Type: ctaProtoICMPType, Data: []byte{t.ICMPType()}},
			netfilter.Attribute{Type: ctaProtoICMPCode, Data: []byte{t.ICMPCode()}})
	case t.Proto == protoICMPv6:
		proto.Children = append(proto.Children,
			netfilter.Attribute{Type: ctaProtoICMPv6ID, Data: netfilter.Uint16Bytes(t.ICMPID())},
			netfilter.Attribute{Type: ctaProtoICMPv6Type, Data: []byte{t.ICMPType()}},
			netfilter.Attribute{Type: ctaProtoICMPv6Code, Data: []byte{t.ICMPCode()}})
	case kernelHasPorts(t.Proto):
		proto.Children = append(proto.Children,
			netfilter.Attribute{Type: ctaProtoSrcPort, Data: netfilter.Uint16Bytes(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoDstPort, Data: netfilter.Uint16Bytes(t.DstPort)})
	}
	return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{ip, proto}}, nil
}

// Netlink and nfnetlink constants for request headers.
const (
	nfnlSubsysCTNetlink = 1 // NFNL_SUBSYS_CTNETLINK

	flagRequest = unix.NLM_F_REQUEST
	flagAck     = unix.NLM_F_ACK
	flagDump    = unix.NLM_F_DUMP
)

// request encodes a ctnetlink request: nlmsghdr (sequence number and port
// id left for the socket), nfgenmsg and attrs.
func request(typ uint8, flags uint16, fam netfilter.ProtoFamily, attrs []netfilter.Attribute) ([]byte, error) {
	ab, err := netfilter.MarshalAttributes(attrs)
	if err != nil {
		return nil, fmt.Errorf("kernelct: encode request: %w", err)
	}
	b := make([]byte, nlmsgHeaderLen+4+len(ab))
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], nfnlSubsysCTNetlink<<8|uint16(typ))
	binary.NativeEndian.PutUint16(b[6:8], flags)
	b[16] = uint8(fam) // nfgen_family; version NFNETLINK_V0 and res_id 0 follow
	copy(b[20:], ab)
	return b, nil
}

// tupleRequest builds a request whose first attribute is t as
// CTA_TUPLE_ORIG, followed by extra.
func tupleRequest(typ uint8, flags uint16, t *Tuple, extra ...netfilter.Attribute) ([]byte, error) {
	ta, err := tupleAttr(ctaTupleOrig, t)
	if err != nil {
		return nil, err
	}
	return request(typ, flags, family(t), append([]netfilter.Attribute{ta}, extra...))
}

// markAttrs returns CTA_MARK and, when mask is non-nil, CTA_MARK_MASK.
func markAttrs(mark uint32, mask *uint32) []netfilter.Attribute {
	a := []netfilter.Attribute{{Type: ctaMark, Data: netfilter.Uint32Bytes(mark)}}
	if mask != nil {
		a = append(a, netfilter.Attribute{Type: ctaMarkMask, Data: netfilter.Uint32Bytes(*mask)})
	}
	return a
}

// errDecode is wrapped by the errors of decodeFlow.
var errDecode = errors.New("kernelct: undecodable ctnetlink message")

// decodeFlow decodes a ctnetlink conntrack message (a dump or get reply,
// or an event) into an Entry and the event type ti-mo/conntrack derives
// from its header (EventNew for NLM_F_CREATE, EventUpdate for other
// IPCTNL_MSG_CT_NEW, EventDestroy for IPCTNL_MSG_CT_DELETE).
func decodeFlow(m *nlMsg) (Entry, ct.Event, error) {
	var ev ct.Event
	if err := ev.Unmarshal(m.message()); err != nil {
		return Entry{}, ev, fmt.Errorf("%w: %w", errDecode, err)
	}
	if ev.Flow == nil {
		return Entry{}, ev, fmt.Errorf("%w: not a conntrack entry (event type %d)", errDecode, ev.Type)
	}
	e, err := fromFlow(ev.Flow)
	if err != nil {
		return Entry{}, ev, fmt.Errorf("%w: %w", errDecode, err)
	}
	return e, ev, nil
}
