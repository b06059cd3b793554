package matchers

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// goDNS builds a message with x/net's dnsmessage, an implementation
// independent of the parser under test; compress turns on name
// compression (a response then points its answer at the question).
func goDNS(t testing.TB, response bool, compress bool, qs ...dnsmessage.Question) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), dnsmessage.Header{ID: 0x1234, Response: response, RecursionDesired: true})
	if compress {
		b.EnableCompression()
	}
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if err := b.Question(q); err != nil {
			t.Fatal(err)
		}
	}
	if response {
		if err := b.StartAnswers(); err != nil {
			t.Fatal(err)
		}
		if err := b.AResource(dnsmessage.ResourceHeader{Name: qs[0].Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func question(name string, typ dnsmessage.Type) dnsmessage.Question {
	return dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}
}

func readQuestions(t testing.TB, msg []byte) (dnsHeader, []string, []uint16, bool) {
	var r dnsReader
	var h dnsHeader
	if !parseDNSMessage(msg, &r, &h) {
		return h, nil, nil, false
	}
	var names []string
	var types []uint16
	var q dnsQuestion
	for r.next(&q) {
		names = append(names, string(q.qname()))
		types = append(types, q.qtype)
	}
	return h, names, types, true
}

func TestParseDNSGo(t *testing.T) {
	long := "a23456789012345678901234567890123456789012345678901234567890123"
	tests := []struct {
		name     string
		msg      []byte
		names    []string
		types    []uint16
		response bool
	}{
		{"query", goDNS(t, false, false, question("www.Example.com.", dnsmessage.TypeA)), []string{"www.Example.com"}, []uint16{1}, false},
		{"aaaa", goDNS(t, false, false, question("x.test.", dnsmessage.TypeAAAA)), []string{"x.test"}, []uint16{28}, false},
		{"response compressed", goDNS(t, true, true, question("mail.example.org.", dnsmessage.TypeMX)), []string{"mail.example.org"}, []uint16{15}, true},
		// Two questions, the second compressed against the first.
		{"two questions", goDNS(t, false, true, question("a.example.net.", dnsmessage.TypeA), question("b.a.example.net.", dnsmessage.TypeTXT)),
			[]string{"a.example.net", "b.a.example.net"}, []uint16{1, 16}, false},
		{"root", goDNS(t, false, false, question(".", dnsmessage.TypeNS)), []string{""}, []uint16{2}, false},
		{"63-byte labels", goDNS(t, false, false, question(long+"."+long+"."+long+".x.", dnsmessage.TypeA)), []string{long + "." + long + "." + long + ".x"}, []uint16{1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, names, types, ok := readQuestions(t, tt.msg)
			if !ok {
				t.Fatal("not parsed")
			}
			if !equalStrings(names, tt.names) || len(types) != len(tt.types) || h.response() != tt.response || h.id != 0x1234 {
				t.Fatalf("names %q types %v response %v id %#x", names, types, h.response(), h.id)
			}
			for i := range types {
				if types[i] != tt.types[i] {
					t.Errorf("type %d = %d, want %d", i, types[i], tt.types[i])
				}
			}
			// Truncated anywhere inside the question section: refused.
			end := len(tt.msg)
			if tt.response {
				end = 12 + len(tt.names[0]) + 2 + 4 // the answer is not read
				if tt.names[0] == "" {
					end = 12 + 1 + 4
				}
			}
			for n := 0; n < end; n++ {
				if _, _, _, ok := readQuestions(t, tt.msg[:n]); ok {
					t.Fatalf("prefix %d/%d parsed", n, end)
				}
			}
		})
	}
}

func TestParseDNSMalformed(t *testing.T) {
	hdr := func(qd uint16) []byte { return []byte{0, 1, 1, 0, byte(qd >> 8), byte(qd), 0, 0, 0, 0, 0, 0} }
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	typeA := []byte{0, 1, 0, 1}
	long := make([]byte, 0, 300)
	for i := 0; i < 4; i++ { // 4 * 64 = 256 wire bytes + root: too long
		long = append(long, 63)
		long = append(long, make([]byte, 63)...)
		for j := len(long) - 63; j < len(long); j++ {
			long[j] = 'a'
		}
	}
	fits := append(append([]byte(nil), long[:3*64]...), 61) // 3*64+62 = 254 wire bytes, +root = 255
	fits = append(fits, make([]byte, 61)...)
	for j := len(fits) - 61; j < len(fits); j++ {
		fits[j] = 'b'
	}
	tests := []struct {
		name string
		msg  []byte
		ok   bool
	}{
		{"no question", hdr(0), false},
		{"too many questions", cat(hdr(9)), false},
		{"label 64", cat(hdr(1), []byte{64}, make([]byte, 64), []byte{0}, typeA), false},
		{"name 256 bytes", cat(hdr(1), long, []byte{0}, typeA), false},
		{"name 255 bytes", cat(hdr(1), fits, []byte{0}, typeA), true},
		{"forward pointer", cat(hdr(1), []byte{0xc0, 14}, typeA, []byte{0}), false},
		{"self pointer", cat(hdr(1), []byte{0xc0, 12}, typeA), false},
		{"backward pointer into header", cat(hdr(1), []byte{0xc0, 0}, typeA), false},
		{"0x40 label", cat(hdr(1), []byte{0x41, 'a', 0}, typeA), false},
		{"missing class", cat(hdr(1), []byte{1, 'a', 0, 0, 1}), false},
		{"second question missing", cat(hdr(2), []byte{1, 'a', 0}, typeA), false},
		{"short", []byte{0, 1, 2}, false},
	}
	for _, tt := range tests {
		if _, _, _, ok := readQuestions(t, tt.msg); ok != tt.ok {
			t.Errorf("%s: ok = %v, want %v", tt.name, ok, tt.ok)
		}
	}
}

func TestDNSTCPMessage(t *testing.T) {
	q1 := goDNS(t, false, false, question("one.test.", dnsmessage.TypeA))
	q2 := goDNS(t, false, false, question("two.test.", dnsmessage.TypeAAAA))
	var stream []byte
	for _, m := range [][]byte{q1, q2} {
		stream = binary.BigEndian.AppendUint16(stream, uint16(len(m)))
		stream = append(stream, m...)
	}
	var got []string
	rest := stream
	for {
		msg, r, st := dnsTCPMessage(rest)
		if st != parseOK {
			if st != parseMore || len(r) != 0 {
				t.Fatalf("status %d with %d bytes left", st, len(r))
			}
			break
		}
		_, names, _, ok := readQuestions(t, msg)
		if !ok {
			t.Fatal("message not parsed")
		}
		got = append(got, names...)
		rest = r
	}
	if !equalStrings(got, []string{"one.test", "two.test"}) {
		t.Errorf("names %q", got)
	}
	if _, _, st := dnsTCPMessage(stream[:len(q1)+1]); st != parseMore {
		t.Errorf("cut message: %d, want more", st)
	}
	if _, _, st := dnsTCPMessage([]byte{0, 5, 1, 2, 3, 4, 5}); st != parseInvalid {
		t.Errorf("5-byte message: %d, want invalid", st)
	}
}

func BenchmarkParseDNS(b *testing.B) {
	msg := goDNS(b, false, false, question("www.example.com.", dnsmessage.TypeAAAA))
	var r dnsReader
	var h dnsHeader
	var q dnsQuestion
	b.ReportAllocs()
	cpu := startCPUTimer()
	defer cpu.report(b, 0)
	for b.Loop() {
		if !parseDNSMessage(msg, &r, &h) || !r.next(&q) {
			b.Fatal("parse failed")
		}
	}
}
