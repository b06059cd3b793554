package matchers

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/qtables/qtables/packet"
	"golang.org/x/net/dns/dnsmessage"
)

// l7Conn builds the packets of one TCP connection between a client and a
// server, tracking sequence numbers, decoded by the real decoder.
type l7Conn struct {
	t              testing.TB
	client, server string
	cport, sport   uint16
	cseq, sseq     uint32
	dec            *packet.Decoder
	now            time.Time
}

func newL7Conn(t testing.TB, cport uint16) *l7Conn {
	dec, err := packet.NewDecoder(packet.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	return &l7Conn{t: t, client: "10.0.0.1", server: "192.0.2.80", cport: cport, sport: 443,
		cseq: 1000, sseq: 50000, dec: dec, now: time.Unix(1700000000, 0)}
}

// seg returns the next packet in direction fromClient with flags and
// payload, advancing that side's sequence number.
func (c *l7Conn) seg(fromClient bool, flags uint8, payload []byte) *packet.View {
	src, dst, sp, dp, seq := c.client, c.server, c.cport, c.sport, &c.cseq
	if !fromClient {
		src, dst, sp, dp, seq = c.server, c.client, c.sport, c.cport, &c.sseq
	}
	return c.segAt(src, dst, sp, dp, flags, *seq, payload, func(n uint32) { *seq += n })
}

func (c *l7Conn) segAt(src, dst string, sp, dp uint16, flags uint8, seq uint32, payload []byte, advance func(uint32)) *packet.View {
	h := tcpHdr(sp, dp, flags)
	binary.BigEndian.PutUint32(h[4:], seq)
	raw := pkt{proto: packet.ProtoTCP, src: src, dst: dst, l4: append(h, payload...)}.view().Network
	v := new(packet.View)
	c.dec.Decode(append([]byte(nil), raw...), v)
	if !v.HasTransport {
		c.t.Fatalf("test packet not decoded: %v", v.Class)
	}
	n := uint32(len(payload))
	if flags&(packet.TCPSyn|packet.TCPFin) != 0 {
		n++
	}
	if advance != nil {
		advance(n)
	}
	c.now = c.now.Add(time.Millisecond)
	v.Timestamp = c.now
	return v
}

// handshake returns SYN, SYN/ACK, ACK.
func (c *l7Conn) handshake() []*packet.View {
	return []*packet.View{c.seg(true, packet.TCPSyn, nil), c.seg(false, packet.TCPSyn|packet.TCPAck, nil), c.seg(true, packet.TCPAck, nil)}
}

func matchAll(m Match, vs ...*packet.View) []bool {
	out := make([]bool, len(vs))
	for i, v := range vs {
		c := ctxFor(v)
		c.Now = v.Timestamp
		out[i] = m.Match(c)
	}
	return out
}

func boolsString(bs []bool) string {
	var b strings.Builder
	for _, x := range bs {
		if x {
			b.WriteByte('1')
		} else {
			b.WriteByte('0')
		}
	}
	return b.String()
}

func TestTLSMatchFlow(t *testing.T) {
	hello := goClientHello(t, &tls.Config{ServerName: "WWW.Example.com", NextProtos: []string{"h2", "http/1.1"}})
	tests := []struct {
		opts string
		// want is the result for: SYN, SYN/ACK, ACK, hello part 1, hello
		// part 2, server reply, client data.
		want string
	}{
		{"--sni www.example.com", "0000111"},
		{"--sni www.example.com.", "0000111"},
		{"--sni *.example.com", "0000111"},
		{"--sni *.www.example.com", "0000000"},
		{"--sni example.com", "0000000"},
		{"! --sni example.com", "0000111"},
		{"! --sni a.test,*.example.com", "0000000"},
		{"--sni other.test,www.example.com", "0000111"},
		{"--alpn h2", "0000111"},
		{"--alpn spdy/3,http/1.1", "0000111"},
		{"! --alpn h2", "0000000"},
		{"--alpn H2", "0000000"}, // ALPN ids are byte strings
		{"--version 1.3", "0000111"},
		{"--version 1.2", "0000000"},
		{"! --version 1.0,1.1", "0000111"},
		{"--sni *.example.com --alpn h2 --version 1.2,1.3", "0000111"},
		{"--sni *.example.com --alpn h3", "0000000"},
	}
	for _, tt := range tests {
		c := newL7Conn(t, 40000)
		m := mustBuild(t, "tls", ruleTCP, tt.opts)
		pkts := append(c.handshake(),
			c.seg(true, packet.TCPAck|packet.TCPPsh, hello[:100]),
			c.seg(true, packet.TCPAck|packet.TCPPsh, hello[100:]),
			c.seg(false, packet.TCPAck, []byte("\x16\x03\x03\x00\x04\x02\x00\x00\x00")),
			c.seg(true, packet.TCPAck, []byte("more")))
		if got := boolsString(matchAll(m, pkts...)); got != tt.want {
			t.Errorf("-m tls %s: %s, want %s", tt.opts, got, tt.want)
		}
	}
}

// TestTLSMatchReorder: the hello's second half arrives first.
func TestTLSMatchReorder(t *testing.T) {
	hello := goClientHello(t, &tls.Config{ServerName: "r.example"})
	m := mustBuild(t, "tls", ruleTCP, "--sni r.example")
	c := newL7Conn(t, 40001)
	hs := c.handshake()
	base := c.cseq
	second := c.segAt(c.client, c.server, c.cport, c.sport, packet.TCPAck, base+200, hello[200:], nil)
	first := c.segAt(c.client, c.server, c.cport, c.sport, packet.TCPAck, base, hello[:200], nil)
	if got := boolsString(matchAll(m, append(hs, second, first, second)...)); got != "000011" {
		t.Errorf("reordered: %s, want 000011", got)
	}
}

// TestTLSMatchNoHandshake: a flow seen mid-stream (no SYN) still parses
// when its first data is the hello; other traffic never matches.
func TestTLSMatchMidStream(t *testing.T) {
	hello := goClientHello(t, &tls.Config{ServerName: "mid.example"})
	m := mustBuild(t, "tls", ruleTCP, "! --sni x.test")
	c := newL7Conn(t, 40002)
	if got := boolsString(matchAll(m, c.seg(true, packet.TCPAck, hello), c.seg(false, packet.TCPAck, nil))); got != "11" {
		t.Errorf("mid-stream hello: %s, want 11", got)
	}
	c = newL7Conn(t, 40003)
	http := c.seg(true, packet.TCPAck, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if got := boolsString(matchAll(m, http, c.seg(false, packet.TCPAck, []byte("HTTP/1.1 200 OK\r\n\r\n")))); got != "00" {
		t.Errorf("HTTP flow under ! --sni: %s, want 00 (no hello, no match)", got)
	}
	// UDP and fragments: no match.
	u := pkt{proto: packet.ProtoUDP, l4: append(udpHdr(1, 443), hello...)}.view()
	if m.Match(ctxFor(u)) {
		t.Error("UDP packet matched")
	}
}

// TestL7NewConnection: a new SYN on the same ports forgets the old hello;
// so does a change of the conntrack entry.
func TestL7NewConnection(t *testing.T) {
	hello := goClientHello(t, &tls.Config{ServerName: "old.example"})
	m := mustBuild(t, "tls", ruleTCP, "--sni old.example")
	c := newL7Conn(t, 40004)
	pkts := append(c.handshake(), c.seg(true, packet.TCPAck, hello))
	c.cseq += 99999 // the new connection's ISN
	pkts = append(pkts, c.seg(true, packet.TCPSyn, nil), c.seg(true, packet.TCPAck, []byte("x")))
	if got := boolsString(matchAll(m, pkts...)); got != "000100" {
		t.Errorf("%s, want 000100", got)
	}
	// A retransmitted SYN does not forget.
	c = newL7Conn(t, 40005)
	syn := c.seg(true, packet.TCPSyn, nil)
	pkts = []*packet.View{syn, c.seg(true, packet.TCPAck, hello), syn}
	if got := boolsString(matchAll(m, pkts...)); got != "011" {
		t.Errorf("retransmitted SYN: %s, want 011", got)
	}
}

func TestL7Eviction(t *testing.T) {
	hello := goClientHello(t, &tls.Config{ServerName: "e.example"})
	m := mustBuild(t, "tls", ruleTCP, "--sni e.example").(*tlsMatch)
	m.t = newL7Table(L7Config{MaxFlows: l7Shards}, needTLS, nil) // one flow per shard
	var conns []*l7Conn
	var last []*packet.View
	for i := 0; i < 200; i++ {
		c := newL7Conn(t, uint16(20000+i))
		conns = append(conns, c)
		v := c.seg(true, packet.TCPAck, hello)
		if !m.Match(ctxFor(v)) {
			t.Fatalf("flow %d: hello not matched", i)
		}
		last = append(last, c.seg(true, packet.TCPAck, []byte("x")))
	}
	st := m.t.stats()
	if st.Flows > l7Shards || st.Evicted < 200-l7Shards {
		t.Errorf("stats %+v: want at most %d flows and at least %d evictions", st, l7Shards, 200-l7Shards)
	}
	// Most early flows are forgotten: their later packets no longer match.
	forgotten := 0
	for i := 0; i < 100; i++ {
		if !m.Match(ctxFor(last[i])) {
			forgotten++
		}
	}
	if forgotten < 80 {
		t.Errorf("only %d of the 100 oldest flows forgotten", forgotten)
	}
}

func TestHTTPMatchFlow(t *testing.T) {
	req := []byte("GET http://Shop.Example:8080/cart/add?id=1 HTTP/1.1\r\nHost: Shop.Example:8080\r\n" +
		"User-Agent: Mozilla/5.0 (X11) Firefox/128.0\r\nAccept: */*\r\n\r\n")
	tests := []struct {
		opts string
		want string // SYN, SYN/ACK, ACK, req part 1, req part 2, response
	}{
		{"--host shop.example", "000011"},
		{"--host *.example", "000011"},
		{"! --host shop.example", "000000"},
		{"--method GET", "000011"},
		{"--method get", "000000"},
		{"--method POST,PUT", "000000"},
		{"! --method POST,PUT", "000011"},
		{"--path /cart", "000011"},
		{"--path /cart/add?id=1", "000011"},
		{"--path /admin", "000000"},
		{"--path http://", "000000"},
		{"--user-agent firefox", "000011"},
		{"! --user-agent curl", "000011"},
		{`--user-agent "(x11)"`, "000011"},
		{"--host shop.example --method GET --path / --user-agent mozilla", "000011"},
	}
	for _, tt := range tests {
		c := newL7Conn(t, 40010)
		c.sport = 80
		m := mustBuild(t, "http", ruleTCP, tt.opts)
		pkts := append(c.handshake(),
			c.seg(true, packet.TCPAck, req[:30]),
			c.seg(true, packet.TCPAck, req[30:]),
			c.seg(false, packet.TCPAck, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")))
		if got := boolsString(matchAll(m, pkts...)); got != tt.want {
			t.Errorf("-m http %s: %s, want %s", tt.opts, got, tt.want)
		}
	}
	// A request without Host or User-Agent: "!" matches it.
	c := newL7Conn(t, 40011)
	bare := c.seg(true, packet.TCPAck, []byte("GET / HTTP/1.0\r\n\r\n"))
	for opts, want := range map[string]bool{"--host a": false, "! --host a": true, "! --user-agent a": true, "--user-agent a": false} {
		m := mustBuild(t, "http", ruleTCP, opts)
		if got := m.Match(ctxFor(bare)); got != want {
			t.Errorf("bare request, %s: %v, want %v", opts, got, want)
		}
	}
}

func TestDNSMatch(t *testing.T) {
	q := goDNS(t, false, false, question("www.Example.com.", dnsmessage.TypeAAAA))
	resp := goDNS(t, true, true, question("www.example.com.", dnsmessage.TypeAAAA))
	other := goDNS(t, false, false, question("other.test.", dnsmessage.TypeA))
	udp := func(msg []byte) *packet.View {
		return decodeRaw(t, pkt{proto: packet.ProtoUDP, l4: append(udpHdr(5353, 53), msg...)}.view().Network)
	}
	tests := []struct {
		opts  string
		q, r  bool // the query, the response
		other bool
	}{
		{"--qname www.example.com", true, true, false},
		{"--qname *.example.com", true, true, false},
		{"--qname example.com", false, false, false},
		{"! --qname www.example.com", false, false, true},
		{"--qtype AAAA", true, true, false},
		{"--qtype aaaa,a", true, true, true},
		{"--qtype 28", true, true, false},
		{"--qname *.example.com --qtype A", false, false, false},
		{"--qname other.test --qtype A", false, false, true},
	}
	for _, tt := range tests {
		m := mustBuild(t, "dns", ruleUDP, tt.opts)
		for _, c := range []struct {
			what string
			v    *packet.View
			want bool
		}{{"query", udp(q), tt.q}, {"response", udp(resp), tt.r}, {"other", udp(other), tt.other}} {
			if got := m.Match(ctxFor(c.v)); got != c.want {
				t.Errorf("-m dns %s, %s: %v, want %v", tt.opts, c.what, got, c.want)
			}
		}
	}
	// Not DNS: no match even negated.
	m := mustBuild(t, "dns", ruleUDP, "! --qname a.test")
	if m.Match(ctxFor(udp([]byte("garbage, not a dns message")))) {
		t.Error("garbage matched ! --qname")
	}

	// Over TCP: two queries in one segment, a third split over two.
	q3 := goDNS(t, false, false, question("third.test.", dnsmessage.TypeMX))
	var stream []byte
	for _, msg := range [][]byte{other, q, q3} {
		stream = binary.BigEndian.AppendUint16(stream, uint16(len(msg)))
		stream = append(stream, msg...)
	}
	cut := 4 + len(other) + len(q) + 5
	for opts, want := range map[string]string{
		"--qname other.test":            "000111",
		"--qname www.example.com":       "000111",
		"--qname third.test --qtype MX": "000011",
		"--qname third.test --qtype A":  "000000",
		"! --qname nothing.test":        "000111",
	} {
		c := newL7Conn(t, 40020)
		c.sport = 53
		m := mustBuild(t, "dns", ruleTCP, opts)
		pkts := append(c.handshake(), c.seg(true, packet.TCPAck, stream[:cut]), c.seg(true, packet.TCPAck, stream[cut:]),
			c.seg(false, packet.TCPAck, nil))
		if got := boolsString(matchAll(m, pkts...)); got != want {
			t.Errorf("-p tcp -m dns %s: %s, want %s", opts, got, want)
		}
	}
}

func decodeRaw(t testing.TB, raw []byte) *packet.View {
	dec, err := packet.NewDecoder(packet.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	v := new(packet.View)
	dec.Decode(raw, v)
	return v
}

func TestStreamStringMatch(t *testing.T) {
	tests := []struct {
		opts string
		want string // SYN, SYN/ACK, ACK, "xxGET /ad", "min HTTP", reply, next
	}{
		{`--algo bm --string "GET /admin" --to 100 --stream`, "0000111"},
		{`--algo kmp --string "get /ADMIN" --icase --to 100 --stream`, "0000111"},
		{`--algo bm --string "get /ADMIN" --to 100 --stream`, "0000000"},
		{`--algo bm ! --string "GET /admin" --to 100 --stream`, "1111000"},
		// The window: the occurrence is at stream offset 2..12.
		{`--algo bm --string "GET /admin" --from 2 --to 12 --stream`, "0000111"},
		{`--algo bm --string "GET /admin" --from 3 --to 100 --stream`, "0000000"},
		{`--algo bm --string "GET /admin" --to 11 --stream`, "0000000"},
		// Found in the reply direction.
		{`--algo bm --string "200 OK" --to 50 --stream`, "0000011"},
		{`--algo bm --hex-string "|48 54|TP" --to 50 --stream`, "0000111"},
	}
	for _, tt := range tests {
		c := newL7Conn(t, 40030)
		m := mustBuild(t, "string", ruleTCP, tt.opts)
		pkts := append(c.handshake(),
			c.seg(true, packet.TCPAck, []byte("xxGET /ad")),
			c.seg(true, packet.TCPAck, []byte("min HTTP/1.1\r\n")),
			c.seg(false, packet.TCPAck, []byte("HTTP/1.1 200 OK\r\n")),
			c.seg(true, packet.TCPAck, nil))
		if got := boolsString(matchAll(m, pkts...)); got != tt.want {
			t.Errorf("-m string %s: %s, want %s", tt.opts, got, tt.want)
		}
	}
	// Without --stream the same pattern split over two packets is not found.
	c := newL7Conn(t, 40031)
	m := mustBuild(t, "string", ruleTCP, `--algo bm --string "GET /admin"`)
	if got := boolsString(matchAll(m, c.seg(true, packet.TCPAck, []byte("xxGET /ad")), c.seg(true, packet.TCPAck, []byte("min")))); got != "00" {
		t.Errorf("per-packet string: %s, want 00", got)
	}
}

func TestL7PrintRoundTrip(t *testing.T) {
	tests := []struct {
		name, proto, opts, save, list string
	}{
		{"tls", "tcp", "--sni WWW.Example.COM.", " --sni www.example.com", " tls sni www.example.com"},
		{"tls", "tcp", "! --sni a.test,*.b.test --alpn h2,http/1.1 ! --version 1.0,1.1",
			" ! --sni a.test,*.b.test --alpn h2,http/1.1 ! --version 1.0,1.1", " tls sni !a.test,*.b.test alpn h2,http/1.1 version !1.0,1.1"},
		{"tls", "tcp", `--alpn "x y"`, ` --alpn "x y"`, ` tls alpn "x y"`},
		{"http", "tcp", "--host h.test --method GET,POST ! --path /admin --user-agent curl/",
			" --host h.test --method GET,POST ! --path /admin --user-agent curl/", " http host h.test method GET,POST path !/admin user-agent curl/"},
		{"http", "tcp", `--user-agent "Mozilla/5.0 (X11)"`, ` --user-agent "Mozilla/5.0 (X11)"`, ` http user-agent "Mozilla/5.0 (X11)"`},
		{"dns", "udp", "--qname *.Example.com --qtype aaaa,65,999", " --qname *.example.com --qtype AAAA,HTTPS,999", " dns qname *.example.com qtype AAAA,HTTPS,999"},
		{"dns", "tcp", "! --qtype ANY", " ! --qtype ANY", " dns qtype !ANY"},
		{"string", "tcp", `--algo kmp --string "a b" --to 300 --stream`, ` --string "a b" --algo kmp --to 300 --stream`, ` STRING match  "a b" ALGO name kmp TO 300 STREAM`},
	}
	for _, tt := range tests {
		m := mustBuild(t, tt.name, ruleFor(t, tt.proto), tt.opts)
		save := saveOf(m)
		if save != tt.save {
			t.Errorf("-m %s %s: Save %q, want %q", tt.name, tt.opts, save, tt.save)
		}
		if got := listOf(m, true); got != tt.list {
			t.Errorf("-m %s %s: List %q, want %q", tt.name, tt.opts, got, tt.list)
		}
		// What Save prints parses back to the same match.
		m2 := mustBuild(t, tt.name, ruleFor(t, tt.proto), save)
		if got := saveOf(m2); got != save {
			t.Errorf("-m %s: Save of the parsed Save %q is %q", tt.name, save, got)
		}
	}
}

func TestL7Errors(t *testing.T) {
	tests := []struct {
		name, proto, opts, err string
	}{
		{"tls", "udp", "--sni a", "-m tls needs -p tcp"},
		{"tls", "", "--sni a", "-m tls needs -p tcp"},
		{"tls", "!tcp", "--sni a", "-m tls needs -p tcp"},
		{"tls", "tcp", "", "needs at least one of --sni"},
		{"tls", "tcp", "--sni a..b,", "empty name"},
		{"tls", "tcp", "--sni a.*.b", "'*' only as its first label"},
		{"tls", "tcp", "--sni *.", "no suffix"},
		{"tls", "tcp", "--sni " + strings.Repeat("a", 254), "longer than 253"},
		{"tls", "tcp", "--version 1.4", "not one of 1.0, 1.1, 1.2, 1.3"},
		{"tls", "tcp", "--version 1.2,", "empty entry"},
		{"tls", "tcp", "--alpn " + strings.Repeat("a", 256), "longer than 255"},
		{"http", "udp", "--host a", "-m http needs -p tcp"},
		{"http", "tcp", "--method G@T", "not an HTTP method token"},
		{"http", "tcp", `--path ""`, "needs a prefix"},
		{"dns", "icmp", "--qname a", "-m dns needs -p udp or -p tcp"},
		{"dns", "udp", "--qtype BOGUS", "neither a known type name nor a number"},
		{"dns", "udp", "--qtype 65536", "neither a known type name nor a number"},
		{"string", "tcp", "--algo bm --string abc --stream", "--stream needs --to DEPTH"},
		{"string", "udp", "--algo bm --string abc --to 10 --stream", "needs -p tcp"},
		{"string", "tcp", "--algo bm --string abcdef --from 5 --to 10 --stream", "shorter than the pattern"},
	}
	for _, tt := range tests {
		_, err := buildMatch(tt.name, ruleFor(t, tt.proto), splitArgs(tt.opts)...)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("-p %s -m %s %s: error %v, want %q", tt.proto, tt.name, tt.opts, err, tt.err)
		}
	}
	// Repeated options are refused.
	if _, err := buildMatch("tls", ruleTCP, "--sni", "a", "--sni", "b"); err == nil {
		t.Error("--sni twice accepted")
	}
}

// TestLinkSharesTable: linked matches read one table, so a flow is
// parsed once; unlinked, each has its own.
func TestLinkSharesTable(t *testing.T) {
	hello := goClientHello(t, &tls.Config{ServerName: "l.example"})
	a := mustBuild(t, "tls", ruleTCP, "--sni l.example")
	b := mustBuild(t, "tls", ruleTCP, "--alpn h2")
	s := mustBuild(t, "string", ruleTCP, "--algo bm --string l.exa --to 2000 --stream")
	d := mustBuild(t, "dns", ruleUDP, "--qname x")
	plain := mustBuild(t, "string", ruleTCP, "--algo bm --string x")
	if n := Link([]Match{a, b, s, d, plain}, L7Config{}); n != 4 {
		t.Fatalf("Link linked %d matches, want 4 (tls, tls, string --stream, dns)", n)
	}
	ta, tb, ts := a.(*tlsMatch).t, b.(*tlsMatch).t, s.(*streamStringMatch).t
	if ta != tb || ta != ts || d.(*dnsMatch).t != nil {
		t.Fatal("linked matches do not share one table")
	}
	if ta.needs != needTLS|needStream || ta.cfg.Depth != DefaultL7Depth {
		t.Errorf("table needs %b depth %d", ta.needs, ta.cfg.Depth)
	}
	c := newL7Conn(t, 40040)
	v := c.seg(true, packet.TCPAck, hello)
	if got := boolsString(matchAll(a, v)) + boolsString(matchAll(b, v)) + boolsString(matchAll(s, v)); got != "101" {
		t.Errorf("linked matches: %s, want 101", got)
	}
	if st := ta.stats(); st.Flows != 1 {
		t.Errorf("%d flows in the shared table, want 1", st.Flows)
	}
}

// TestL7SteadyStateAllocs: once a flow is parsed its packets cost no
// allocation; neither do new flows once the table has recycled records.
func TestL7SteadyStateAllocs(t *testing.T) {
	hello := goClientHello(t, &tls.Config{ServerName: "alloc.example", NextProtos: []string{"h2"}})
	m := mustBuild(t, "tls", ruleTCP, "--sni *.example --alpn h2")
	c := newL7Conn(t, 40050)
	hs := c.handshake()
	data := c.seg(true, packet.TCPAck, hello)
	later := c.seg(false, packet.TCPAck, []byte("server bytes"))
	ctx := ctxFor(nil)
	for _, v := range append(hs, data) {
		ctx.Pkt = v
		m.Match(ctx)
	}
	ctx.Pkt = later
	if n := testing.AllocsPerRun(1000, func() {
		if !m.Match(ctx) {
			t.Fatal("no match")
		}
	}); n != 0 {
		t.Errorf("%v allocations per packet of a parsed flow", n)
	}
}

func BenchmarkL7(b *testing.B) {
	hello := goClientHello(b, &tls.Config{ServerName: "www.example.com", NextProtos: []string{"h2", "http/1.1"}})
	m := mustBuild(b, "tls", ruleTCP, "--sni *.example.com --alpn h2")
	b.Run("packet-of-parsed-flow", func(b *testing.B) {
		c := newL7Conn(b, 40060)
		ctx := ctxFor(c.seg(true, packet.TCPAck, hello))
		m.Match(ctx)
		ctx.Pkt = c.seg(true, packet.TCPAck, []byte("app data"))
		b.ReportAllocs()
		cpu := startCPUTimer()
		defer cpu.report(b, 0)
		for b.Loop() {
			m.Match(ctx)
		}
	})
	// A whole flow's inspection: a handshake, the hello in two segments,
	// the server's first segment. Two generations of connections on the
	// same ports with different initial sequence numbers alternate, so
	// every SYN opens a new connection over a recycled record and every
	// hello is reassembled and parsed again. With 256 connections the
	// packets stay in the cache, as a packet just received is; with 4,096
	// (6 MB of packets) every packet is a cache miss.
	for _, nflows := range []int{256, 4096} {
		b.Run(fmt.Sprintf("per-flow-%d", nflows), func(b *testing.B) {
			c := newL7Conn(b, 1)
			var flows [][]*packet.View
			for gen := uint32(0); gen < 2; gen++ {
				for i := 0; i < nflows; i++ {
					c.cport = uint16(1024 + i)
					c.cseq, c.sseq = uint32(i)*7919+gen*1e6, uint32(i)*104729
					flows = append(flows, append(c.handshake(),
						c.seg(true, packet.TCPAck, hello[:300]),
						c.seg(true, packet.TCPAck, hello[300:]),
						c.seg(false, packet.TCPAck, []byte("\x16\x03\x03\x00\x04\x02\x00\x00\x00"))))
				}
			}
			m := mustBuild(b, "tls", ruleTCP, "--sni *.example.com --alpn h2") // a fresh table
			ctx := ctxFor(nil)
			b.ReportAllocs()
			cpu := startCPUTimer()
			defer cpu.report(b, 0)
			i, matched := 0, 0
			for b.Loop() {
				for _, v := range flows[i%len(flows)] {
					ctx.Pkt = v
					if m.Match(ctx) {
						matched++
					}
				}
				i++
			}
			if matched != 2*i {
				b.Fatalf("%d packets matched over %d flows, want 2 per flow", matched, i)
			}
		})
	}
}

// TestL7Concurrent: workers judging different flows through one match
// share the table safely (run with -race) and each sees its own flows.
func TestL7Concurrent(t *testing.T) {
	hello := goClientHello(t, &tls.Config{ServerName: "c.example"})
	m := mustBuild(t, "tls", ruleTCP, "--sni c.example")
	const workers, flows = 4, 300
	type flow struct{ pkts []*packet.View }
	work := make([][]flow, workers)
	for w := range work {
		c := newL7Conn(t, 0)
		c.client = "10.0.1." + string(rune('1'+w))
		for i := 0; i < flows; i++ {
			c.cport = uint16(10000 + i)
			work[w] = append(work[w], flow{append(c.handshake(), c.seg(true, packet.TCPAck, hello[:150]),
				c.seg(true, packet.TCPAck, hello[150:]), c.seg(false, packet.TCPAck, []byte("x")))})
		}
	}
	errs := make(chan string, workers)
	for w := range work {
		go func() {
			ctx := ctxFor(nil)
			got := ""
			for _, f := range work[w] {
				var r strings.Builder
				for _, v := range f.pkts {
					ctx.Pkt = v
					if m.Match(ctx) {
						r.WriteByte('1')
					} else {
						r.WriteByte('0')
					}
				}
				if r.String() != "000011" && got == "" {
					got = r.String()
				}
			}
			errs <- got
		}()
	}
	for range work {
		if got := <-errs; got != "" {
			t.Errorf("a worker saw %s, want 000011", got)
		}
	}
}

// TestL7Index: the shard's open-addressing index agrees with a map
// through random inserts and removals (colliding hashes included).
func TestL7Index(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var sh l7Shard
	sh.max = 1 << 12
	want := map[int32]uint32{} // record index -> hash
	keyOf := func(idx int32) l7Key { return l7Key{pa: uint16(idx), pb: uint16(idx >> 16), proto: 6} }
	for step := 0; step < 200000; step++ {
		if len(want) > 0 && (r.IntN(2) == 0 || len(want) >= 3000) {
			for idx, h := range want { // remove a random one
				sh.remove(h, idx)
				delete(want, idx)
				break
			}
		} else {
			idx := int32(r.IntN(1 << 20))
			if _, dup := want[idx]; dup {
				continue
			}
			h := r.Uint32() & 0xff0000ff // few distinct homes: long runs
			for int(idx>>l7ChunkBits) >= len(sh.chunks) {
				sh.chunks = append(sh.chunks, make([]l7Flow, 1<<l7ChunkBits))
			}
			f := sh.flow(idx)
			f.key, f.hash = keyOf(idx), h
			sh.insert(h, idx)
			want[idx] = h
		}
		if step%1000 == 0 {
			if sh.count != len(want) {
				t.Fatalf("step %d: count %d, want %d", step, sh.count, len(want))
			}
			for idx, h := range want {
				if got, ok := sh.find(keyOf(idx), h); !ok || got != idx {
					t.Fatalf("step %d: record %d not found (%d %v)", step, idx, got, ok)
				}
			}
		}
	}
}
