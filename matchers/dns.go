package matchers

// The dns match, a qtables extension: it matches DNS messages by the name
// and type they ask about. Over UDP each datagram is read on its own (a
// query, or a response, which repeats the question); over TCP the
// length-prefixed messages in the first bytes of each direction (see
// l7.go) make the flow's set of questions, which every later packet of the
// flow sees. A message that does not parse, or a TCP flow before its first
// complete message, fails the match, negated or not.
//
//	-m dns [!] --qname NAME[,NAME...]   names as tls --sni ("*.suffix")
//	-m dns [!] --qtype TYPE[,TYPE...]   A, AAAA, MX, ... or a number
//
// The options must hold for the same question: "--qname a.test --qtype
// AAAA" matches a message asking for a.test's AAAA records, not one asking
// a.test A and b.test AAAA.
//
// The DNS message parser behind it (RFC 1035 section 4: header,
// question section, name compression; RFC 1035 4.2.2 and RFC 7766 for the
// 2-byte length prefix over TCP).
//
// Only the header and the question section are read: they say which name
// and type a query asks for, and a response repeats them. Names are
// decoded into a fixed array in the question, so nothing allocates.
// Compression pointers are followed only backwards and at most
// dnsMaxPointers times, so a crafted message cannot loop.

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/qtables/qtables/packet"
)

// DNS limits and constants.
const (
	dnsHeaderLen = 12
	// dnsMaxName is the longest name in presentation form: 255 bytes on
	// the wire make at most 253 characters, 254 with a trailing dot.
	dnsMaxName     = 254
	dnsMaxLabel    = 63
	dnsMaxPointers = 16
	// dnsMaxQuestions bounds the questions read from one message; real
	// queries carry one (RFC 9619 makes QDCOUNT > 1 an error).
	dnsMaxQuestions = 8
)

// dnsHeader is the part of the message header the match reads.
type dnsHeader struct {
	id, flags uint16
	qdcount   uint16
}

// response reports the QR bit.
func (h dnsHeader) response() bool { return h.flags&0x8000 != 0 }

// opcode returns the header's OPCODE.
func (h dnsHeader) opcode() uint8 { return uint8(h.flags>>11) & 0xf }

// dnsQuestion is one decoded question.
type dnsQuestion struct {
	name   [dnsMaxName]byte
	n      uint8 // length of the name; 0 for the root
	qtype  uint16
	qclass uint16
}

// qname returns the name in presentation form, without the trailing dot
// ("www.example.com"; empty for the root). It aliases q.
func (q *dnsQuestion) qname() []byte { return q.name[:q.n] }

// dnsReader walks the question section of one message.
type dnsReader struct {
	msg  []byte
	off  int
	left int
}

// parseDNSMessage checks msg's header and question section and prepares
// r to return the questions. It returns false when msg is not a DNS
// message with at least one readable question: shorter than the header,
// no question, more than dnsMaxQuestions, or a question that does not
// decode.
func parseDNSMessage(msg []byte, r *dnsReader, h *dnsHeader) bool {
	if len(msg) < dnsHeaderLen {
		return false
	}
	*h = dnsHeader{
		id:      binary.BigEndian.Uint16(msg),
		flags:   binary.BigEndian.Uint16(msg[2:]),
		qdcount: binary.BigEndian.Uint16(msg[4:]),
	}
	if h.qdcount == 0 || h.qdcount > dnsMaxQuestions {
		return false
	}
	*r = dnsReader{msg: msg, off: dnsHeaderLen, left: int(h.qdcount)}
	// Validate every question now, so that a caller iterating later
	// never meets a half-valid message.
	var q dnsQuestion
	probe := *r
	for probe.next(&q) {
	}
	return probe.left == 0
}

// next decodes the next question into q; false when there is none left
// or it does not decode.
func (r *dnsReader) next(q *dnsQuestion) bool {
	if r.left == 0 {
		return false
	}
	end, ok := dnsName(r.msg, r.off, q)
	if !ok || len(r.msg) < end+4 {
		r.left = -1
		return false
	}
	q.qtype = binary.BigEndian.Uint16(r.msg[end:])
	q.qclass = binary.BigEndian.Uint16(r.msg[end+2:])
	r.off = end + 4
	r.left--
	return true
}

// dnsName decodes the name at msg[off:] into q.name and returns the offset
// just after it in msg (after the first pointer when compressed).
func dnsName(msg []byte, off int, q *dnsQuestion) (end int, ok bool) {
	n, wire, hops := 0, 0, 0
	end = -1
	for {
		if off >= len(msg) {
			return 0, false
		}
		l := int(msg[off])
		switch l & 0xc0 {
		case 0x00:
		case 0xc0:
			if off+1 >= len(msg) || hops == dnsMaxPointers {
				return 0, false
			}
			ptr := (l&0x3f)<<8 | int(msg[off+1])
			if ptr >= off || ptr < dnsHeaderLen {
				return 0, false // only backwards (no loops), never into the header
			}
			if end < 0 {
				end = off + 2
			}
			off, hops = ptr, hops+1
			continue
		default:
			return 0, false // 0x40 and 0x80 label types are obsolete
		}
		if l == 0 {
			if end < 0 {
				end = off + 1
			}
			q.n = uint8(n)
			return end, true
		}
		if wire += 1 + l; wire > 254 || off+1+l > len(msg) {
			return 0, false // the 255-byte limit counts the root's byte too
		}
		if n > 0 {
			q.name[n] = '.'
			n++
		}
		n += copy(q.name[n:], msg[off+1:off+1+l])
		off += 1 + l
	}
}

// dnsTCPMessage returns the message at the start of a DNS-over-TCP stream
// (a 2-byte length, then the message) and the rest of the stream.
func dnsTCPMessage(stream []byte) (msg, rest []byte, st l7Parse) {
	if len(stream) < 2 {
		return nil, stream, parseMore
	}
	n := int(binary.BigEndian.Uint16(stream))
	if n < dnsHeaderLen {
		return nil, stream, parseInvalid
	}
	if len(stream) < 2+n {
		return nil, stream, parseMore
	}
	return stream[2 : 2+n], stream[2+n:], parseOK
}

// dnsTypes names the common query types (IANA DNS parameters), for
// --qtype and its printing.
var dnsTypes = [...]struct {
	name string
	code uint16
}{
	{"A", 1}, {"NS", 2}, {"CNAME", 5}, {"SOA", 6}, {"PTR", 12}, {"HINFO", 13},
	{"MX", 15}, {"TXT", 16}, {"RP", 17}, {"AFSDB", 18}, {"SIG", 24}, {"KEY", 25},
	{"AAAA", 28}, {"LOC", 29}, {"SRV", 33}, {"NAPTR", 35}, {"KX", 36},
	{"CERT", 37}, {"DNAME", 39}, {"OPT", 41}, {"APL", 42}, {"DS", 43},
	{"SSHFP", 44}, {"IPSECKEY", 45}, {"RRSIG", 46}, {"NSEC", 47},
	{"DNSKEY", 48}, {"DHCID", 49}, {"NSEC3", 50}, {"NSEC3PARAM", 51},
	{"TLSA", 52}, {"SMIMEA", 53}, {"HIP", 55}, {"CDS", 59}, {"CDNSKEY", 60},
	{"OPENPGPKEY", 61}, {"CSYNC", 62}, {"ZONEMD", 63}, {"SVCB", 64},
	{"HTTPS", 65}, {"SPF", 99}, {"TKEY", 249}, {"TSIG", 250}, {"IXFR", 251},
	{"AXFR", 252}, {"ANY", 255}, {"URI", 256}, {"CAA", 257},
}

// ---- the match ----

func init() {
	RegisterMatch(&MatchExt{
		Name: "dns",
		Options: []Option{
			{Name: "qname", Args: 1, Invert: true},
			{Name: "qtype", Args: 1, Invert: true},
		},
		New: func() MatchBuilder { return &dnsBuilder{} },
	})
}

type dnsBuilder struct {
	seen map[string]bool
	m    dnsMatch
}

func (b *dnsBuilder) Parse(name string, args []string, invert bool) error {
	if err := once(&b.seen, name); err != nil {
		return err
	}
	m := &b.m
	switch name {
	case "qname":
		var err error
		m.qname, err = parseNameList(name, args[0])
		m.invName = invert
		return err
	case "qtype":
		l, err := parseList(name, args[0])
		if err != nil {
			return err
		}
		for _, s := range l {
			t, err := parseQtype(s)
			if err != nil {
				return err
			}
			m.qtypes = append(m.qtypes, t)
		}
		m.invType = invert
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return nil
}

// parseQtype reads a type name (any case) or number.
func parseQtype(s string) (uint16, error) {
	for _, t := range dnsTypes {
		if equalFold(s, t.name) {
			return t.code, nil
		}
	}
	v, err := ParseUint(s, 0xffff)
	if err != nil {
		return 0, fmt.Errorf("--qtype: %q is neither a known type name nor a number 0-65535", s)
	}
	return uint16(v), nil
}

func (b *dnsBuilder) Build(r *Rule) (Match, error) {
	if err := requireProto(r, "dns", packet.ProtoUDP, packet.ProtoTCP); err != nil {
		return nil, err
	}
	if len(b.seen) == 0 {
		return nil, errNoOption("dns", "qname", "qtype")
	}
	m := b.m
	if r.Proto == packet.ProtoTCP {
		m.t = newL7Table(L7Config{}, needDNS, nil)
	}
	return &m, nil
}

// dnsMatch holds the options; nil lists were not given. t is nil for -p
// udp rules, which read each datagram on its own.
type dnsMatch struct {
	l7Base
	qname            []namePattern
	qtypes           []uint16
	invName, invType bool
}

func (m *dnsMatch) l7Needs() l7Need {
	if m.t == nil {
		return 0
	}
	return needDNS
}

func (m *dnsMatch) setL7Table(t *l7Table) {
	if m.t != nil { // only the -p tcp instances read flows
		m.t = t
	}
}

// Match reads the datagram's questions (UDP) or the flow's (TCP).
func (m *dnsMatch) Match(c *Context) bool {
	v := c.Pkt
	switch {
	case v.Proto == packet.ProtoUDP:
		if !v.HasTransport || v.FragOff() != 0 {
			return false
		}
		var r dnsReader
		var h dnsHeader
		if !parseDNSMessage(v.Payload, &r, &h) {
			return false
		}
		var q dnsQuestion
		for r.next(&q) {
			if m.test(q.qname(), q.qtype) {
				return true
			}
		}
		return false
	case m.t == nil:
		return false
	}
	sh, f := m.t.acquire(c)
	if f == nil {
		return false
	}
	ok := false
	for off := 0; !ok; {
		q, next, more := f.nextQuestion(off)
		if !more {
			break
		}
		ok, off = m.test(q.name, q.qtype), next
	}
	sh.mu.Unlock()
	return ok
}

func (m *dnsMatch) test(name []byte, qtype uint16) bool {
	if m.qname != nil && matchNames(m.qname, name) == m.invName {
		return false
	}
	if m.qtypes != nil {
		has := false
		for _, t := range m.qtypes {
			has = has || t == qtype
		}
		if has == m.invType {
			return false
		}
	}
	return true
}

func (m *dnsMatch) writeTypes(b *strings.Builder) {
	for i, t := range m.qtypes {
		if i > 0 {
			b.WriteByte(',')
		}
		name := ""
		for _, d := range dnsTypes {
			if d.code == t {
				name = d.name
				break
			}
		}
		if name == "" {
			name = strconv.Itoa(int(t))
		}
		b.WriteString(name)
	}
}

// Save prints " [!] --qname LIST [!] --qtype LIST".
func (m *dnsMatch) Save(b *strings.Builder) { m.dump(b, saveOpt) }

// List prints " dns qname [!]LIST qtype [!]LIST".
func (m *dnsMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" dns")
	m.dump(b, listOpt)
}

func (m *dnsMatch) dump(b *strings.Builder, opt func(*strings.Builder, string, bool, func(*strings.Builder))) {
	if m.qname != nil {
		opt(b, "qname", m.invName, func(b *strings.Builder) { writeNameList(b, m.qname) })
	}
	if m.qtypes != nil {
		opt(b, "qtype", m.invType, m.writeTypes)
	}
}
