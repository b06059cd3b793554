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

// Requests are encoded by appending to a byte slice: nlmsghdr, nfgenmsg,
// then netlink attributes (struct nlattr: length and type in host order,
// the payload in network order as ctnetlink wants it, each attribute
// padded to 4 bytes, nested ones flagged NLA_F_NESTED). This is some fifty
// times faster than building netfilter.Attribute trees and encoding them,
// and SetMark and Lookup are what the live daemon calls per settled flow.

// appendAttr appends an attribute with the given payload.
func appendAttr(b []byte, typ uint16, payload ...byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func appendBE16(b []byte, typ, v uint16) []byte {
	return appendAttr(b, typ, byte(v>>8), byte(v))
}

func appendBE32(b []byte, typ uint16, v uint32) []byte {
	return appendAttr(b, typ, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// nestStart appends the header of a nested attribute; nestEnd fills in its
// length once the children are appended.
func nestStart(b []byte, typ uint16) ([]byte, int) {
	start := len(b)
	b = binary.NativeEndian.AppendUint16(b, 0)
	b = binary.NativeEndian.AppendUint16(b, typ|unix.NLA_F_NESTED)
	return b, start
}

func nestEnd(b []byte, start int) {
	binary.NativeEndian.PutUint16(b[start:], uint16(len(b)-start))
}

// appendTuple appends t as the nested CTA_TUPLE_* attribute typ. The
// kernel finds a connection by either of its tuples, so t may be the
// original or the reply direction.
func appendTuple(b []byte, typ uint16, t *Tuple) ([]byte, error) {
	var ip int
	b, outer := nestStart(b, typ)
	b, ip = nestStart(b, ctaTupleIP)
	switch t.Family {
	case 4:
		src, dst := netip.AddrFrom16(t.Src), netip.AddrFrom16(t.Dst)
		if !src.Is4In6() || !dst.Is4In6() {
			return nil, fmt.Errorf("kernelct: IPv4 tuple with addresses not in IPv4-mapped form")
		}
		b = appendAttr(b, ctaIPv4Src, t.Src[12:]...)
		b = appendAttr(b, ctaIPv4Dst, t.Dst[12:]...)
	case 6:
		b = appendAttr(b, ctaIPv6Src, t.Src[:]...)
		b = appendAttr(b, ctaIPv6Dst, t.Dst[:]...)
	default:
		return nil, fmt.Errorf("kernelct: tuple has no address family")
	}
	nestEnd(b, ip)
	var proto int
	b, proto = nestStart(b, ctaTupleProto)
	b = appendAttr(b, ctaProtoNum, t.Proto)
	switch {
	case t.Proto == protoICMP:
		b = appendBE16(b, ctaProtoICMPID, t.ICMPID())
		b = appendAttr(b, ctaProtoICMPType, t.ICMPType())
		b = appendAttr(b, ctaProtoICMPCode, t.ICMPCode())
	case t.Proto == protoICMPv6:
		b = appendBE16(b, ctaProtoICMPv6ID, t.ICMPID())
		b = appendAttr(b, ctaProtoICMPv6Type, t.ICMPType())
		b = appendAttr(b, ctaProtoICMPv6Code, t.ICMPCode())
	case kernelHasPorts(t.Proto):
		b = appendBE16(b, ctaProtoSrcPort, t.SrcPort)
		b = appendBE16(b, ctaProtoDstPort, t.DstPort)
	}
	nestEnd(b, proto)
	nestEnd(b, outer)
	return b, nil
}

// Netlink and nfnetlink constants for request headers.
const (
	nfnlSubsysCTNetlink = 1 // NFNL_SUBSYS_CTNETLINK

	flagRequest = unix.NLM_F_REQUEST
	flagAck     = unix.NLM_F_ACK
	flagDump    = unix.NLM_F_DUMP
)

// requestHeader starts a ctnetlink request in a buffer with room for
// attributes: nlmsghdr (length set by finish, sequence number and port id
// left for the socket) and nfgenmsg (family, NFNETLINK_V0, res_id 0).
func requestHeader(typ uint8, flags uint16, fam netfilter.ProtoFamily) []byte {
	b := make([]byte, nlmsgHeaderLen+4, 128)
	binary.NativeEndian.PutUint16(b[4:6], nfnlSubsysCTNetlink<<8|uint16(typ))
	binary.NativeEndian.PutUint16(b[6:8], flags)
	b[16] = uint8(fam)
	return b
}

// finish sets the request's length.
func finish(b []byte) []byte {
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	return b
}

// tupleRequest builds a request whose attributes are t as CTA_TUPLE_ORIG
// and, if mark is not nil, CTA_MARK and (if mask is not nil) CTA_MARK_MASK.
func tupleRequest(typ uint8, flags uint16, t *Tuple, mark, mask *uint32) ([]byte, error) {
	b, err := appendTuple(requestHeader(typ, flags, family(t)), ctaTupleOrig, t)
	if err != nil {
		return nil, err
	}
	if mark != nil {
		b = appendBE32(b, ctaMark, *mark)
		if mask != nil {
			b = appendBE32(b, ctaMarkMask, *mask)
		}
	}
	return finish(b), nil
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
