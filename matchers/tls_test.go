package matchers

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// goClientHello returns the ClientHello records Go's crypto/tls client
// sends with cfg: an implementation independent of the parser under test.
func goClientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := tls.Client(client, cfg)
		_ = c.Handshake() // fails once the server side closes
	}()
	var out []byte
	buf := make([]byte, 64<<10)
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	// The first flight is the ClientHello, in one or more records; read
	// records until the handshake message is complete.
	for {
		n, err := server.Read(buf)
		out = append(out, buf[:n]...)
		if msg, st := tlsHandshakeMessage(out, make([]byte, len(out))); st == parseOK && len(msg) > 0 {
			break
		}
		if err != nil {
			t.Fatalf("reading the ClientHello: %v (have %d bytes)", err, len(out))
		}
	}
	server.Close()
	client.Close()
	<-done
	return out
}

// reframe splits the handshake message of a single-record ClientHello over
// records of at most size bytes of fragment each.
func reframe(t testing.TB, rec []byte, size int) []byte {
	t.Helper()
	rlen := int(binary.BigEndian.Uint16(rec[3:5]))
	msg := rec[5 : 5+rlen]
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, rec[0], rec[1], rec[2], byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func alpnList(h *tlsHello) []string {
	var out []string
	for l := h.alpn; len(l) > 0; {
		name, rest, ok := alpnNext(l)
		if !ok {
			return append(out, "<bad>")
		}
		out = append(out, string(name))
		l = rest
	}
	return out
}

func TestParseClientHelloGo(t *testing.T) {
	tests := []struct {
		name    string
		cfg     *tls.Config
		sni     string
		alpn    []string
		version uint16
	}{
		{"tls13 sni alpn", &tls.Config{ServerName: "Example.COM", NextProtos: []string{"h2", "http/1.1"}}, "Example.COM", []string{"h2", "http/1.1"}, versionTLS13},
		{"tls12 max", &tls.Config{ServerName: "a.b.example.org", MaxVersion: tls.VersionTLS12}, "a.b.example.org", nil, versionTLS12},
		{"tls11 max", &tls.Config{ServerName: "old.example", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, "old.example", nil, versionTLS11},
		// An IP address is never sent as SNI (RFC 6066 section 3).
		{"no sni", &tls.Config{ServerName: "192.0.2.1", NextProtos: []string{"acme-tls/1"}}, "", []string{"acme-tls/1"}, versionTLS13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := goClientHello(t, tt.cfg)
			var h tlsHello
			scratch := make([]byte, len(raw))
			if st := parseClientHello(raw, scratch, &h); st != parseOK {
				t.Fatalf("parse = %d, want OK", st)
			}
			if got := string(h.sni); got != tt.sni || h.hasSNI != (tt.sni != "") {
				t.Errorf("sni = %q (has %v), want %q", got, h.hasSNI, tt.sni)
			}
			if got := alpnList(&h); !equalStrings(got, tt.alpn) {
				t.Errorf("alpn = %q, want %q", got, tt.alpn)
			}
			if h.maxVersion != tt.version {
				t.Errorf("max version = %#x, want %#x", h.maxVersion, tt.version)
			}
			if tt.version == versionTLS13 && h.legacyVersion != versionTLS12 {
				t.Errorf("legacy version = %#x, want 0x0303 (RFC 8446 4.1.2)", h.legacyVersion)
			}

			// Every strict prefix is a valid beginning.
			for n := 0; n < len(raw); n++ {
				if st := parseClientHello(raw[:n], scratch, &h); st != parseMore {
					t.Fatalf("prefix of %d/%d bytes: parse = %d, want more", n, len(raw), st)
				}
			}
			// The same message framed in records of 1, 7 and 100 bytes.
			for _, size := range []int{1, 7, 100} {
				fr := reframe(t, raw, size)
				sc := make([]byte, len(fr))
				if st := parseClientHello(fr, sc, &h); st != parseOK || string(h.sni) != tt.sni {
					t.Fatalf("records of %d: parse = %d, sni %q", size, st, h.sni)
				}
				if st := parseClientHello(fr[:len(fr)-1], sc, &h); st != parseMore {
					t.Fatalf("records of %d, last byte missing: parse = %d, want more", size, st)
				}
				// Scratch smaller than the message: refused, not overrun.
				if st := parseClientHello(fr, sc[:10:10], &h); st != parseInvalid {
					t.Fatalf("records of %d, small scratch: parse = %d, want invalid", size, st)
				}
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// helloBuilder writes ClientHellos field by field, for the malformed and
// unusual cases a real client never sends.
type helloBuilder struct {
	legacy  uint16
	sid     []byte
	suites  []byte
	comp    []byte
	exts    []byte
	noExts  bool
	recVers uint16
}

func (b helloBuilder) ext(typ uint16, data []byte) helloBuilder {
	b.exts = binary.BigEndian.AppendUint16(b.exts, typ)
	b.exts = binary.BigEndian.AppendUint16(b.exts, uint16(len(data)))
	b.exts = append(b.exts, data...)
	return b
}

func sniExt(names ...string) []byte {
	var l []byte
	for _, n := range names {
		l = append(l, 0)
		l = binary.BigEndian.AppendUint16(l, uint16(len(n)))
		l = append(l, n...)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(l))), l...)
}

func (b helloBuilder) body() []byte {
	if b.legacy == 0 {
		b.legacy = versionTLS12
	}
	if b.suites == nil {
		b.suites = []byte{0x13, 0x01}
	}
	if b.comp == nil {
		b.comp = []byte{0}
	}
	out := binary.BigEndian.AppendUint16(nil, b.legacy)
	out = append(out, make([]byte, 32)...)
	out = append(out, byte(len(b.sid)))
	out = append(out, b.sid...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(b.suites)))
	out = append(out, b.suites...)
	out = append(out, byte(len(b.comp)))
	out = append(out, b.comp...)
	if !b.noExts {
		out = binary.BigEndian.AppendUint16(out, uint16(len(b.exts)))
		out = append(out, b.exts...)
	}
	return out
}

func (b helloBuilder) record() []byte {
	body := b.body()
	msg := append([]byte{tlsClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	if b.recVers == 0 {
		b.recVers = versionTLS10
	}
	rec := []byte{tlsContentHandshake, byte(b.recVers >> 8), byte(b.recVers), byte(len(msg) >> 8), byte(len(msg))}
	return append(rec, msg...)
}

func TestParseClientHelloCases(t *testing.T) {
	grease := []byte{6, 0x1a, 0x1a, 0x03, 0x04, 0x03, 0x03}
	tests := []struct {
		name    string
		rec     []byte
		want    l7Parse
		sni     string
		version uint16
	}{
		{"minimal no extensions", helloBuilder{noExts: true}.record(), parseOK, "", versionTLS12},
		{"empty extensions", helloBuilder{}.record(), parseOK, "", versionTLS12},
		{"sni", helloBuilder{}.ext(0, sniExt("x.test")).record(), parseOK, "x.test", versionTLS12},
		{"first host_name wins", helloBuilder{}.ext(0, sniExt("a.test", "b.test")).record(), parseOK, "a.test", versionTLS12},
		{"repeated sni extension: first", helloBuilder{}.ext(0, sniExt("a.test")).ext(0, sniExt("b.test")).record(), parseOK, "a.test", versionTLS12},
		{"grease skipped", helloBuilder{}.ext(43, grease).record(), parseOK, "", versionTLS13},
		{"only grease", helloBuilder{}.ext(43, []byte{2, 0xfa, 0xfa}).record(), parseOK, "", versionTLS12},
		{"ssl3 record version", helloBuilder{recVers: versionSSL30, legacy: versionSSL30}.record(), parseOK, "", versionSSL30},
		{"session id 32", helloBuilder{sid: make([]byte, 32)}.record(), parseOK, "", versionTLS12},
		{"session id 33", helloBuilder{sid: make([]byte, 33)}.record(), parseInvalid, "", 0},
		{"odd suites", helloBuilder{suites: []byte{1, 2, 3}}.record(), parseInvalid, "", 0},
		{"no compression", helloBuilder{comp: []byte{}}.record(), parseInvalid, "", 0},
		{"empty sni name", helloBuilder{}.ext(0, sniExt("")).record(), parseInvalid, "", 0},
		{"sni list length lies", helloBuilder{}.ext(0, []byte{0, 9, 0, 0, 1, 'a'}).record(), parseInvalid, "", 0},
		{"alpn empty name", helloBuilder{}.ext(16, []byte{0, 1, 0}).record(), parseInvalid, "", 0},
		{"versions odd", helloBuilder{}.ext(43, []byte{3, 3, 4, 3}).record(), parseInvalid, "", 0},
		{"extension overruns", helloBuilder{exts: []byte{0, 0, 0, 9, 1}}.record(), parseInvalid, "", 0},
		{"legacy major 2", helloBuilder{legacy: 0x0200}.record(), parseInvalid, "", 0},
		{"alert record", []byte{21, 3, 3, 0, 2, 2, 40}, parseInvalid, "", 0},
		{"server hello", []byte{22, 3, 3, 0, 4, 2, 0, 0, 0}, parseInvalid, "", 0},
		{"sslv2 hello", []byte{0x80, 0x2e, 1, 3, 1}, parseInvalid, "", 0},
		{"http", []byte("GET / HTTP/1.1\r\n"), parseInvalid, "", 0},
		{"empty record", []byte{22, 3, 1, 0, 0}, parseInvalid, "", 0},
		{"huge record", []byte{22, 3, 1, 0xff, 0xff}, parseInvalid, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h tlsHello
			st := parseClientHello(tt.rec, make([]byte, len(tt.rec)), &h)
			if st != tt.want {
				t.Fatalf("parse = %d, want %d", st, tt.want)
			}
			if st == parseOK && (string(h.sni) != tt.sni || h.maxVersion != tt.version) {
				t.Errorf("sni %q version %#x, want %q %#x", h.sni, h.maxVersion, tt.sni, tt.version)
			}
		})
	}
}

// TestClientHelloThroughStream feeds a ClientHello in segments of every
// size, in order and reversed, through l7Stream.
func TestClientHelloThroughStream(t *testing.T) {
	raw := goClientHello(t, &tls.Config{ServerName: "seg.example", NextProtos: []string{"h2"}})
	for _, seg := range []int{1, 3, 50, 300, len(raw)} {
		for _, reverse := range []bool{false, true} {
			var s l7Stream
			s.buf = make([]byte, 4096)
			s.syn(1000)
			var offs []int
			for off := 0; off < len(raw); off += seg {
				offs = append(offs, off)
			}
			if reverse {
				// Last segment first, then the rest in order: a
				// reordering with one hole at a time.
				offs = append(offs[len(offs)-1:], offs[:len(offs)-1]...)
			}
			for _, off := range offs {
				end := min(off+seg, len(raw))
				s.add(1001+uint32(off), raw[off:end])
			}
			var h tlsHello
			if st := parseClientHello(s.prefix(), make([]byte, 4096), &h); st != parseOK || string(h.sni) != "seg.example" {
				t.Errorf("segments of %d (reversed %v): parse %d sni %q", seg, reverse, st, h.sni)
			}
		}
	}
	// A stream depth shorter than the hello: more is never enough.
	var s l7Stream
	s.buf = make([]byte, 100)
	s.add(7, raw)
	var h tlsHello
	if !s.full() || parseClientHello(s.prefix(), make([]byte, 100), &h) != parseMore {
		t.Errorf("depth 100: full %v", s.full())
	}
}

func BenchmarkParseClientHello(b *testing.B) {
	raw := goClientHello(b, &tls.Config{ServerName: "www.example.com", NextProtos: []string{"h2", "http/1.1"}})
	scratch := make([]byte, 4096)
	var h tlsHello
	b.ReportAllocs()
	cpu := startCPUTimer()
	defer cpu.report(b, 0)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if parseClientHello(raw, scratch, &h) != parseOK {
			b.Fatal("parse failed")
		}
	}
}
