package matchers

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// Fuzz targets for the application-layer parsers, and a deterministic
// sweep of garbage, truncated and oversized inputs that runs with the
// ordinary tests. The parsers must never panic and must keep their
// structural promises on any input.

// checkHello checks what parseClientHello promises for any input.
func checkHello(t *testing.T, data []byte) {
	scratch := make([]byte, len(data))
	var h tlsHello
	st := parseClientHello(data, scratch, &h)
	if st != parseOK {
		return
	}
	if h.hasSNI != (len(h.sni) > 0) {
		t.Fatalf("hasSNI %v with %d bytes", h.hasSNI, len(h.sni))
	}
	for l := h.alpn; len(l) > 0; {
		var ok bool
		if _, l, ok = alpnNext(l); !ok {
			t.Fatal("accepted a malformed ALPN list")
		}
	}
	// Bytes after a complete hello change nothing.
	more := append(append([]byte(nil), data...), 0x17, 3, 3)
	var h2 tlsHello
	if parseClientHello(more, make([]byte, len(more)), &h2) != parseOK || !bytes.Equal(h.sni, h2.sni) || h.maxVersion != h2.maxVersion {
		t.Fatal("trailing bytes changed the result")
	}
}

func checkHTTP(t *testing.T, data []byte) {
	var r httpRequest
	for _, final := range []bool{false, true} {
		st := parseHTTPRequest(data, final, &r)
		if final && st == parseMore {
			t.Fatal("parseMore on a final stream")
		}
		if st == parseOK && (len(r.method) == 0 || len(r.target) == 0 || !bytes.HasPrefix(data, r.method)) {
			t.Fatalf("OK without method/target: %q %q", r.method, r.target)
		}
		if st == parseOK && r.complete {
			// A complete request is complete whatever follows.
			var r2 httpRequest
			more := append(append([]byte(nil), data...), "junk"...)
			if parseHTTPRequest(more, false, &r2) != parseOK || !bytes.Equal(r.host, r2.host) {
				t.Fatal("trailing bytes changed a complete request")
			}
		}
	}
}

func checkDNS(t *testing.T, data []byte) {
	var r dnsReader
	var h dnsHeader
	if parseDNSMessage(data, &r, &h) {
		var q dnsQuestion
		n := 0
		for r.next(&q) {
			if len(q.qname()) > 253 {
				t.Fatalf("name of %d characters", len(q.qname()))
			}
			n++
		}
		if n != int(h.qdcount) {
			t.Fatalf("%d questions read of %d validated", n, h.qdcount)
		}
	}
	for rest := data; ; {
		msg, next, st := dnsTCPMessage(rest)
		if st != parseOK {
			break
		}
		if len(next) >= len(rest) {
			t.Fatal("dnsTCPMessage made no progress")
		}
		parseDNSMessage(msg, &r, &h)
		rest = next
	}
}

// seedHello is a real ClientHello for the fuzz corpora.
func seedHello(t testing.TB) []byte {
	return goClientHello(t, &tls.Config{ServerName: "fuzz.example", NextProtos: []string{"h2", "http/1.1"}})
}

func FuzzParseClientHello(f *testing.F) {
	raw := seedHello(f)
	f.Add(raw)
	f.Add(reframe(f, raw, 50))
	f.Add(helloBuilder{}.ext(0, sniExt("a", "b")).ext(43, []byte{2, 0x0a, 0x0a}).record())
	f.Add([]byte{22, 3, 1, 0, 1, 1})
	f.Fuzz(checkHello)
}

func FuzzParseHTTPRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: b\r\n\r\n"))
	f.Add([]byte("POST /x?y HTTP/1.0\nHost:  spaced  \n\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost"))
	f.Fuzz(checkHTTP)
}

func FuzzParseDNS(f *testing.F) {
	f.Add(goDNS(f, false, false, question("www.example.com.", dnsmessage.TypeA)))
	f.Add(goDNS(f, true, true, question("a.example.", dnsmessage.TypeMX), question("b.a.example.", dnsmessage.TypeA)))
	m := goDNS(f, false, false, question("tcp.example.", dnsmessage.TypeAAAA))
	f.Add(append(binary.BigEndian.AppendUint16(nil, uint16(len(m))), m...))
	f.Fuzz(checkDNS)
}

// TestL7ParsersGarbage runs the fuzz properties over random bytes, every
// truncation and single-byte corruption of real messages, and inputs far
// larger than any depth.
func TestL7ParsersGarbage(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	hello := seedHello(t)
	req := []byte("GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nAccept: */*\r\n\r\n")
	dnsq := goDNS(t, false, true, question("x.example.", dnsmessage.TypeA), question("y.x.example.", dnsmessage.TypeA))
	for _, seed := range [][]byte{hello, req, dnsq} {
		for n := 0; n <= len(seed); n++ {
			checkHello(t, seed[:n])
			checkHTTP(t, seed[:n])
			checkDNS(t, seed[:n])
		}
		for i := 0; i < len(seed); i++ {
			b := append([]byte(nil), seed...)
			b[i] ^= byte(1 + rng.IntN(255))
			checkHello(t, b)
			checkHTTP(t, b)
			checkDNS(t, b)
		}
	}
	for i := 0; i < 2000; i++ {
		b := make([]byte, rng.IntN(600))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if len(b) > 0 && i%3 == 0 {
			b[0] = 22 // keep the TLS parser past its first check
		}
		checkHello(t, b)
		checkHTTP(t, b)
		checkDNS(t, b)
	}
	// Oversized: a 1 MiB stream of each kind.
	big := bytes.Repeat([]byte("A"), 1<<20)
	checkHTTP(t, big)
	checkHello(t, append([]byte{22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff}, big...))
	checkDNS(t, append([]byte{0xff, 0xff}, big...))
	hugeHeader := append([]byte("GET / HTTP/1.1\r\nX: "), big...)
	checkHTTP(t, hugeHeader)
}
