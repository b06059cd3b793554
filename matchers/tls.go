package matchers

// The tls match, a qtables extension (the kernel has none): it matches
// the packets of TCP connections whose ClientHello names a server
// (--sni), offers an application protocol (--alpn) or offers a highest
// TLS version (--version). The ClientHello is read once per flow from the
// first bytes of the stream (see l7.go), whichever direction carries it,
// so a hello split over segments or records still parses; from the packet
// that completes it on, every packet of the flow, both directions, sees
// its values. Until then, and for flows that open with anything else, the
// match fails, negated or not.
//
//	-m tls [!] --sni NAME[,NAME...]      server_name, without regard to case;
//	                                     "*.example.com" matches names under
//	                                     example.com (not example.com itself);
//	                                     "!" also matches hellos without SNI
//	-m tls [!] --alpn PROTO[,PROTO...]   one of the protocols is offered
//	-m tls [!] --version V[,V...]        the highest version offered (the
//	                                     largest supported_versions entry,
//	                                     else legacy_version) is one of
//	                                     1.0, 1.1, 1.2, 1.3
//
// The ClientHello parser behind it (RFC 8446 section 4.1.2, the
// record layer of section 5.1, server_name of RFC 6066 section 3, ALPN of
// RFC 7301, supported_versions of RFC 8446 section 4.2.1).
//
// It reads the opening bytes of a TCP stream as l7Stream reassembled them
// and does not allocate: the fields it returns alias the stream, or the
// caller's scratch buffer when the ClientHello is split over several TLS
// records (rare, but legal: the handshake message is then the
// concatenation of the records' fragments). Every length is checked
// against what contains it; a ClientHello that lies about a length is
// invalid, never a reason to read out of bounds.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/qtables/qtables/packet"
)

// l7Parse is the outcome of parsing a stream prefix.
type l7Parse uint8

const (
	// parseMore: what is there is a valid beginning; more bytes are needed.
	parseMore l7Parse = iota
	// parseOK: the message is complete and its fields are filled in.
	parseOK
	// parseInvalid: the bytes are not this protocol (or are malformed).
	parseInvalid
)

// TLS constants.
const (
	tlsRecordHeader     = 5
	tlsContentHandshake = 22
	tlsMaxRecord        = 1<<14 + 2048 // TLSCiphertext's bound; plaintext is 2^14
	tlsClientHello      = 1

	tlsExtServerName        = 0
	tlsExtALPN              = 16
	tlsExtSupportedVersions = 43

	tlsSNIHostName = 0
)

// TLS protocol versions as they appear on the wire.
const (
	versionSSL30 = 0x0300
	versionTLS10 = 0x0301
	versionTLS11 = 0x0302
	versionTLS12 = 0x0303
	versionTLS13 = 0x0304
)

// tlsHello is what the tls match needs from a ClientHello. Slices alias the
// bytes given to parseClientHello (or its scratch buffer).
type tlsHello struct {
	// LegacyVersion is ClientHello.legacy_version (0x0303 in TLS 1.3).
	legacyVersion uint16
	// maxVersion is the highest version offered: the largest non-GREASE
	// entry of supported_versions when the extension is present, else
	// legacyVersion (RFC 8446 4.2.1: servers must then ignore
	// legacy_version).
	maxVersion uint16
	// sni is the first host_name of server_name; hasSNI says whether it
	// was present.
	sni    []byte
	hasSNI bool
	// alpn is ALPN's ProtocolNameList without its length prefix: 1-byte
	// length-prefixed names, checked to be well formed (see alpnNext).
	alpn    []byte
	hasALPN bool
}

// parseClientHello parses the ClientHello at the start of stream, a TCP
// stream's first bytes in order. When the handshake message is split over
// several records, their fragments are joined in scratch (which must be at
// least as long as stream; parseInvalid otherwise).
func parseClientHello(stream, scratch []byte, h *tlsHello) l7Parse {
	*h = tlsHello{}
	msg, st := tlsHandshakeMessage(stream, scratch)
	if st != parseOK {
		return st
	}
	return parseClientHelloBody(msg[4:], h)
}

// tlsHandshakeMessage returns the first handshake message of stream (its
// 4-byte header included) once it is complete, provided it is a
// ClientHello.
func tlsHandshakeMessage(stream, scratch []byte) ([]byte, l7Parse) {
	if st := tlsRecordOK(stream); st != parseOK {
		return nil, st
	}
	rlen := int(binary.BigEndian.Uint16(stream[3:5]))
	frag := stream[tlsRecordHeader:min(len(stream), tlsRecordHeader+rlen)]
	// The handshake header may itself be cut by the record boundary;
	// the common case (a whole message in the first record) needs no copy.
	if len(frag) > 0 && frag[0] != tlsClientHello {
		return nil, parseInvalid
	}
	if len(frag) >= 4 {
		mlen := int(frag[1])<<16 | int(frag[2])<<8 | int(frag[3])
		if 4+mlen <= rlen {
			if len(frag) < 4+mlen {
				return nil, parseMore
			}
			return frag[:4+mlen], parseOK
		}
	}
	if len(frag) < rlen {
		return nil, parseMore
	}
	// Join fragments of consecutive handshake records in scratch.
	out := scratch[:0]
	for off := 0; ; {
		rec := stream[off:]
		if st := tlsRecordOK(rec); st != parseOK {
			return nil, st
		}
		rlen := int(binary.BigEndian.Uint16(rec[3:5]))
		if len(rec) < tlsRecordHeader+rlen {
			return nil, parseMore
		}
		if len(out)+rlen > cap(out) {
			return nil, parseInvalid // larger than the stream depth
		}
		out = append(out, rec[tlsRecordHeader:tlsRecordHeader+rlen]...)
		off += tlsRecordHeader + rlen
		if len(out) >= 4 {
			if out[0] != tlsClientHello {
				return nil, parseInvalid
			}
			mlen := int(out[1])<<16 | int(out[2])<<8 | int(out[3])
			if len(out) >= 4+mlen {
				return out[:4+mlen], parseOK
			}
		}
	}
}

// tlsRecordOK checks the header of the record at the start of b: a
// handshake record, protocol major version 3, a non-empty fragment no
// longer than the record layer allows.
func tlsRecordOK(b []byte) l7Parse {
	if len(b) >= 1 && b[0] != tlsContentHandshake {
		return parseInvalid
	}
	if len(b) >= 2 && b[1] != 3 {
		return parseInvalid
	}
	if len(b) < tlsRecordHeader {
		return parseMore
	}
	if n := binary.BigEndian.Uint16(b[3:5]); n == 0 || n > tlsMaxRecord {
		return parseInvalid
	}
	return parseOK
}

// parseClientHelloBody parses the ClientHello structure after the
// handshake header.
func parseClientHelloBody(b []byte, h *tlsHello) l7Parse {
	// legacy_version, random, legacy_session_id<0..32>
	if len(b) < 2+32+1 {
		return parseInvalid
	}
	h.legacyVersion = binary.BigEndian.Uint16(b)
	h.maxVersion = h.legacyVersion
	if b[0] != 3 {
		return parseInvalid
	}
	sid := int(b[34])
	if sid > 32 {
		return parseInvalid
	}
	b = b[35:]
	if len(b) < sid+2 {
		return parseInvalid
	}
	b = b[sid:]
	// cipher_suites<2..2^16-2>
	cs := int(binary.BigEndian.Uint16(b))
	if cs < 2 || cs%2 != 0 || len(b) < 2+cs+1 {
		return parseInvalid
	}
	b = b[2+cs:]
	// legacy_compression_methods<1..2^8-1>
	cm := int(b[0])
	if cm < 1 || len(b) < 1+cm {
		return parseInvalid
	}
	b = b[1+cm:]
	if len(b) == 0 {
		return parseOK // no extensions (SSL 3.0 style)
	}
	if len(b) < 2 {
		return parseInvalid
	}
	ext := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+ext {
		return parseInvalid
	}
	b = b[2 : 2+ext]
	var seenVersions bool
	for len(b) > 0 {
		if len(b) < 4 {
			return parseInvalid
		}
		typ := binary.BigEndian.Uint16(b)
		n := int(binary.BigEndian.Uint16(b[2:]))
		if len(b) < 4+n {
			return parseInvalid
		}
		data := b[4 : 4+n]
		b = b[4+n:]
		switch typ {
		case tlsExtServerName:
			if h.hasSNI {
				continue // a repeated extension: the first one counts
			}
			if !parseSNI(data, h) {
				return parseInvalid
			}
		case tlsExtALPN:
			if h.hasALPN {
				continue
			}
			if len(data) < 2 || int(binary.BigEndian.Uint16(data)) != len(data)-2 {
				return parseInvalid
			}
			list := data[2:]
			for rest := list; len(rest) > 0; {
				var ok bool
				if _, rest, ok = alpnNext(rest); !ok {
					return parseInvalid
				}
			}
			h.alpn, h.hasALPN = list, true
		case tlsExtSupportedVersions:
			if seenVersions {
				continue
			}
			seenVersions = true
			if len(data) < 1 || int(data[0]) != len(data)-1 || data[0]%2 != 0 {
				return parseInvalid
			}
			best := uint16(0)
			for v := data[1:]; len(v) >= 2; v = v[2:] {
				ver := binary.BigEndian.Uint16(v)
				if !tlsGREASE(ver) && ver > best {
					best = ver
				}
			}
			if best != 0 {
				h.maxVersion = best
			}
		}
	}
	return parseOK
}

// parseSNI reads the server_name extension's ServerNameList and keeps the
// first host_name. A list without one leaves hasSNI false.
func parseSNI(data []byte, h *tlsHello) bool {
	if len(data) < 2 || int(binary.BigEndian.Uint16(data)) != len(data)-2 {
		return false
	}
	for l := data[2:]; len(l) > 0; {
		if len(l) < 3 {
			return false
		}
		typ, n := l[0], int(binary.BigEndian.Uint16(l[1:]))
		if len(l) < 3+n {
			return false
		}
		if typ == tlsSNIHostName && !h.hasSNI {
			if n == 0 {
				return false
			}
			h.sni, h.hasSNI = l[3:3+n], true
		}
		l = l[3+n:]
	}
	return true
}

// alpnNext splits the first protocol name off a ProtocolNameList.
func alpnNext(list []byte) (name, rest []byte, ok bool) {
	if len(list) < 1 {
		return nil, nil, false
	}
	n := int(list[0])
	if n == 0 || len(list) < 1+n {
		return nil, nil, false
	}
	return list[1 : 1+n], list[1+n:], true
}

// tlsGREASE reports whether v is a GREASE value (RFC 8701): 0x?A?A with
// equal bytes.
func tlsGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

// ---- the match ----

func init() {
	RegisterMatch(&MatchExt{
		Name: "tls",
		Options: []Option{
			{Name: "sni", Args: 1, Invert: true},
			{Name: "alpn", Args: 1, Invert: true},
			{Name: "version", Args: 1, Invert: true},
		},
		New: func() MatchBuilder { return &tlsBuilder{} },
	})
}

// tlsVersionNames are the --version values.
var tlsVersionNames = [...]struct {
	name string
	v    uint16
}{{"1.0", versionTLS10}, {"1.1", versionTLS11}, {"1.2", versionTLS12}, {"1.3", versionTLS13}}

type tlsBuilder struct {
	seen map[string]bool
	m    tlsMatch
}

func (b *tlsBuilder) Parse(name string, args []string, invert bool) error {
	if err := once(&b.seen, name); err != nil {
		return err
	}
	m := &b.m
	var err error
	switch name {
	case "sni":
		m.sni, err = parseNameList(name, args[0])
		m.invSNI = invert
	case "alpn":
		var l []string
		if l, err = parseList(name, args[0]); err == nil {
			for _, p := range l {
				if len(p) > 255 {
					return fmt.Errorf("--alpn: %q is longer than 255 bytes", p)
				}
				m.alpn = append(m.alpn, []byte(p))
			}
		}
		m.invALPN = invert
	case "version":
		var l []string
		if l, err = parseList(name, args[0]); err == nil {
			for _, v := range l {
				ver, ok := uint16(0), false
				for _, n := range tlsVersionNames {
					if n.name == v {
						ver, ok = n.v, true
					}
				}
				if !ok {
					return fmt.Errorf("--version: %q is not one of 1.0, 1.1, 1.2, 1.3", v)
				}
				m.versions = append(m.versions, ver)
			}
		}
		m.invVersion = invert
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return err
}

func (b *tlsBuilder) Build(r *Rule) (Match, error) {
	if err := requireProto(r, "tls", packet.ProtoTCP); err != nil {
		return nil, err
	}
	if len(b.seen) == 0 {
		return nil, errNoOption("tls", "sni", "alpn", "version")
	}
	m := b.m
	m.t = newL7Table(L7Config{}, needTLS, nil)
	return &m, nil
}

// l7Base is what every flow-table match has.
type l7Base struct{ t *l7Table }

func (b *l7Base) setL7Table(t *l7Table)         { b.t = t }
func (b *l7Base) l7StreamSearch() *streamSearch { return nil }

// tlsMatch holds the options; nil lists were not given.
type tlsMatch struct {
	l7Base
	sni                         []namePattern
	alpn                        [][]byte
	versions                    []uint16
	invSNI, invALPN, invVersion bool
}

func (m *tlsMatch) l7Needs() l7Need { return needTLS }

// Match feeds the packet to its flow and tests the flow's ClientHello.
func (m *tlsMatch) Match(c *Context) bool {
	sh, f := m.t.acquire(c)
	if f == nil {
		return false
	}
	ok := f.found&needTLS != 0 && m.test(f)
	sh.mu.Unlock()
	return ok
}

func (m *tlsMatch) test(f *l7Flow) bool {
	if m.sni != nil && (f.tls.hasSNI && matchNames(m.sni, f.val(f.tls.sni))) == m.invSNI {
		return false
	}
	if m.alpn != nil && alpnOffers(f.val(f.tls.alpn), m.alpn) == m.invALPN {
		return false
	}
	if m.versions != nil {
		has := false
		for _, v := range m.versions {
			has = has || v == f.tls.version
		}
		if has == m.invVersion {
			return false
		}
	}
	return true
}

// alpnOffers reports whether the ProtocolNameList list holds one of want.
func alpnOffers(list []byte, want [][]byte) bool {
	for len(list) > 0 {
		name, rest, ok := alpnNext(list)
		if !ok {
			return false
		}
		for _, w := range want {
			if bytes.Equal(name, w) {
				return true
			}
		}
		list = rest
	}
	return false
}

func (m *tlsMatch) writeALPN(b *strings.Builder) {
	for i, p := range m.alpn {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(p)
	}
}

func (m *tlsMatch) writeVersions(b *strings.Builder) {
	for i, v := range m.versions {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(tlsVersionNames[v-versionTLS10].name)
	}
}

// Save prints " [!] --sni LIST [!] --alpn LIST [!] --version LIST"; a
// list that needs quoting (an ALPN id with a space) is quoted.
func (m *tlsMatch) Save(b *strings.Builder) {
	m.dump(b, saveOpt)
}

// List prints " tls sni [!]LIST alpn [!]LIST version [!]LIST".
func (m *tlsMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" tls")
	m.dump(b, listOpt)
}

func (m *tlsMatch) dump(b *strings.Builder, opt func(*strings.Builder, string, bool, func(*strings.Builder))) {
	if m.sni != nil {
		opt(b, "sni", m.invSNI, func(b *strings.Builder) { writeNameList(b, m.sni) })
	}
	if m.alpn != nil {
		opt(b, "alpn", m.invALPN, func(b *strings.Builder) {
			var s strings.Builder
			m.writeALPN(&s)
			saveToken(b, s.String())
		})
	}
	if m.versions != nil {
		opt(b, "version", m.invVersion, m.writeVersions)
	}
}
