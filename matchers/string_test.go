package matchers

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qtables/qtables/internal/kerneltest"
	"github.com/qtables/qtables/internal/netns"
	"github.com/qtables/qtables/packet"
)

// The save and list forms below are what iptables 1.8.9 (nf_tables)
// prints; the "iptables" subtests check each against the installed one.
func TestStringFormats(t *testing.T) {
	runFmtVectors(t, "string", []fmtVector{
		{opts: "--algo bm --string test", save: ` --string "test" --algo bm`, listN: ` STRING match  "test" ALGO name bm`},
		{opts: "--algo bm --from 0 --to 65535 --string test", save: ` --string "test" --algo bm`, listN: ` STRING match  "test" ALGO name bm`},
		{opts: "! --string test --algo kmp", save: ` ! --string "test" --algo kmp`, listN: ` STRING match ! "test" ALGO name kmp`},
		{opts: "--algo kmp --string x --from 10 --to 100 --icase", save: ` --string "x" --algo kmp --from 10 --to 100 --icase`,
			listN: ` STRING match  "x" ALGO name kmp FROM 10 TO 100 ICASE`},
		{opts: "--algo bm --string x --from 0x10", save: ` --string "x" --algo bm --from 16`, listN: ` STRING match  "x" ALGO name bm FROM 16`},
		{opts: "--algo bm --string x --to 0", save: ` --string "x" --algo bm --to 0`, listN: ` STRING match  "x" ALGO name bm TO 0`},
		{opts: "--algo bm --string x --from 65535", save: ` --string "x" --algo bm --from 65535`, listN: ` STRING match  "x" ALGO name bm FROM 65535`},
		{opts: "--algo bm --hex-string |0a0a0a0a|", save: ` --hex-string "|0a0a0a0a|" --algo bm`, listN: ` STRING match  "|0a0a0a0a|" ALGO name bm`},
		{opts: "--algo bm --hex-string |AbCd|", save: ` --hex-string "|abcd|" --algo bm`, listN: ` STRING match  "|abcd|" ALGO name bm`},
		{opts: "--algo bm --hex-string |00|", save: ` --hex-string "|00|" --algo bm`, listN: ` STRING match  "|00|" ALGO name bm`},
		{opts: "--algo bm --hex-string |7f|", save: ` --hex-string "|7f|" --algo bm`, listN: ` STRING match  "|7f|" ALGO name bm`},
		// printable bytes from --hex-string come back as --string
		{opts: "--algo bm --hex-string GET|2f|index", save: ` --string "GET/index" --algo bm`, listN: ` STRING match  "GET/index" ALGO name bm`},
		{opts: "--algo bm --hex-string abc|", save: ` --string "abc" --algo bm`, listN: ` STRING match  "abc" ALGO name bm`},
		{opts: "! --hex-string |4142||43| --algo kmp --icase", save: ` ! --string "AB|43" --algo kmp --icase`, listN: ` STRING match ! "AB|43" ALGO name kmp ICASE`},
		{opts: "--algo bm --string " + strings.Repeat("a", 128), save: ` --string "` + strings.Repeat("a", 128) + `" --algo bm`,
			listN: ` STRING match  "` + strings.Repeat("a", 128) + `" ALGO name bm`},
	})
}

// TestStringFormatsArgv covers patterns with quotes, backslashes, spaces
// and non-ASCII bytes, which the option strings of runFmtVectors cannot
// carry.
func TestStringFormatsArgv(t *testing.T) {
	cases := []struct {
		argv        []string
		save, listN string
	}{
		{[]string{"--algo", "kmp", "!", "--string", `a"b\c`}, ` ! --string "a\"b\\c" --algo kmp`, ` STRING match ! "a\"b\\c" ALGO name kmp`},
		{[]string{"--algo", "bm", "--string", "a b'c"}, ` --string "a b'c" --algo bm`, ` STRING match  "a b'c" ALGO name bm`},
		// a trailing backslash forces hex
		{[]string{"--algo", "bm", "--string", `ab\`}, ` --hex-string "|61625c|" --algo bm`, ` STRING match  "|61625c|" ALGO name bm`},
		{[]string{"--algo", "bm", "--string", "caf\xc3\xa9"}, ` --hex-string "|636166c3a9|" --algo bm`, ` STRING match  "|636166c3a9|" ALGO name bm`},
		{[]string{"--algo", "bm", "--hex-string", "| 41 42 43|x"}, ` --string "ABCx" --algo bm`, ` STRING match  "ABCx" ALGO name bm`},
		{[]string{"--algo", "bm", "--hex-string", `\|x`}, ` --string "|x" --algo bm`, ` STRING match  "|x" ALGO name bm`},
		{[]string{"--algo", "bm", "--hex-string", `a\\b`}, ` --string "a\\b" --algo bm`, ` STRING match  "a\\b" ALGO name bm`},
		{[]string{"--algo", "bm", "--hex-string", `|41|\|`}, ` --hex-string "|415c|" --algo bm`, ` STRING match  "|415c|" ALGO name bm`},
		{[]string{"--algo", "bm", "--hex-string", "|41|| 42|"}, ` --string "A| 42" --algo bm`, ` STRING match  "A| 42" ALGO name bm`},
		{[]string{"--algo", "bm", "--string", "x", "--from", " 5"}, ` --string "x" --algo bm --from 5`, ` STRING match  "x" ALGO name bm FROM 5`},
	}
	var live []liveRule
	for _, tc := range cases {
		live = append(live, liveRule{ext: append([]string{"-m", "string"}, tc.argv...), save: " -m string" + tc.save, listN: tc.listN})
		m, err := buildMatch("string", ruleAny, tc.argv...)
		if err != nil {
			t.Errorf("%q: %v", tc.argv, err)
			continue
		}
		if got := saveOf(m); got != tc.save {
			t.Errorf("%q: Save = %q, want %q", tc.argv, got, tc.save)
		}
		for _, numeric := range []bool{true, false} {
			if got := listOf(m, numeric); got != tc.listN {
				t.Errorf("%q: List(%v) = %q, want %q", tc.argv, numeric, got, tc.listN)
			}
		}
	}
	checkLive(t, live)
}

func TestStringErrors(t *testing.T) {
	runErrVectors(t, "string", []errVector{
		{opts: "--algo wrong --string abcd", err: "unknown string search algorithm"},
		{opts: "--algo BM --string abcd", err: "unknown string search algorithm"},
		{opts: "--algo abcdefghijklmnop --string x", err: "unknown string search algorithm"},
		{opts: "--algo fsm --string abcd", err: "fsm"},
		{opts: "--string x", err: `"--algo" must be specified`},
		{opts: "--algo bm", err: "You must specify"},
		{opts: "--algo bm --string x --hex-string y", err: "cannot be used together"},
		{opts: "--algo bm --from 10 --to 5 --string x", err: "beyond --to"},
		{opts: "--algo bm --to 65536 --string x", err: "out of range"},
		{opts: "--algo bm --from -1 --string x", err: "out of range"},
		{opts: "--algo bm --string " + strings.Repeat("a", 129), err: "STRING too long"},
		{opts: "--algo bm --hex-string |414|", err: "Invalid hex block"},
		{opts: "--algo bm --hex-string |41", err: "Invalid hex block"},
		{opts: "--algo bm --hex-string ab\\", err: "Bad literal placement"},
		{opts: "--algo bm --hex-string ||", err: "Odd number of hex digits"},
		{opts: "--algo bm --hex-string |4g|", err: "Invalid hex char 'g'"},
		{opts: "--algo bm --hex-string |41\\41|", err: "Cannot include literals"},
		{opts: "--algo bm --hex-string |4\\|", err: "Invalid hex char"},
		{opts: "--algo bm --hex-string |" + strings.Repeat("41", 128) + "|", err: "STRING too long"},
	})
	// Arguments the option strings cannot carry.
	var live []liveRule
	for _, argv := range [][]string{
		{"--algo", "bm", "--string", ""},                // the kernel refuses an empty pattern
		{"--algo", "bm", "--hex-string", ""},            // iptables: at least one char
		{"--algo", "bm", "--hex-string", "|   "},        // parses to nothing
		{"--algo", "bm", "--hex-string", "|41 42  43|"}, // two spaces
		{"--algo", "", "--string", "x"},
	} {
		live = append(live, liveRule{ext: append([]string{"-m", "string"}, argv...), refused: true})
		if _, err := buildMatch("string", ruleAny, argv...); err == nil {
			t.Errorf("%q: accepted, iptables refuses it", argv)
		}
	}
	checkLive(t, live)
}

func TestParseHexString(t *testing.T) {
	cases := []struct {
		in, want, err string
	}{
		{in: "|0a0a|", want: "\n\n"},
		{in: "GET |2f|index", want: "GET /index"},
		{in: "| 41 42 43|x", want: "ABCx"},
		{in: "|41 42 43 |", want: "ABC"},
		{in: `\|x`, want: "|x"},
		{in: `a\\b`, want: `a\b`},
		{in: "|4142||43|", want: "AB|43"}, // the byte after '|' is data
		{in: `|41|\`, want: `A\`},
		{in: "abc|", want: "abc"},
		{in: "|", want: ""},
		{in: "|   ", want: ""},
		{in: "", err: "at least one char"},
		{in: "|414|", err: "Invalid hex block"},
		{in: "|41", err: "Invalid hex block"},
		{in: "||", err: "Odd number"},
		{in: "|4", err: "Odd number"},
		{in: `ab\`, err: "Bad literal placement"},
		{in: `|41\41|`, err: "Cannot include literals"},
		{in: `|4\|`, err: "Invalid hex char '\\'"},
		{in: "|41  42|", err: "Invalid hex char ' '"},
		{in: "|x1|", err: "Invalid hex char 'x'"},
		{in: strings.Repeat("a", 128), want: strings.Repeat("a", 128)},
		{in: strings.Repeat("a", 129), err: "too long"},
		// 128 bytes and then the closing '|': the length check runs
		// before that '|' is read
		{in: "|" + strings.Repeat("41", 128) + "|", err: "too long"},
		{in: "|" + strings.Repeat("41", 128), err: "Invalid hex block"}, // a pair must be followed by something
		{in: "|" + strings.Repeat("41", 127) + "|A", want: strings.Repeat("A", 128)},
	}
	for _, tc := range cases {
		got, err := ParseHexString(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseHexString(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("ParseHexString(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseHexString checks that the parser never panics, never returns
// more than 128 bytes, and that every byte string survives the hex form
// iptables-save prints for it, but one: a pattern of the full 128 bytes
// printed in hex cannot be read back, because the parser checks the length
// before it reads the closing '|' (iptables-restore 1.8.9 fails on its own
// iptables-save output there too).
func FuzzParseHexString(f *testing.F) {
	for _, s := range []string{"|0a0a|", "GET |2f|index", `\|x`, "|4142||43|", "abc|", "| 41 |", `|41|\`, "||", "|", `\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseHexString(s)
		if err != nil {
			return
		}
		if len(p) > stringMaxPattern {
			t.Fatalf("%q: %d bytes", s, len(p))
		}
		if len(p) == 0 {
			return
		}
		m := &stringMatch{algo: algoKMP, pattern: p, to: 0xffff}
		var b strings.Builder
		m.writePattern(&b)
		printed := strings.Trim(b.String()[1:], `"`)
		if stringIsHex(p) {
			back, err := ParseHexString(printed)
			if len(p) == stringMaxPattern {
				if err == nil || !strings.Contains(err.Error(), "too long") {
					t.Fatalf("%q: saved as %q, which parses to %q, %v; iptables refuses it", p, printed, back, err)
				}
				return
			}
			if err != nil || !bytes.Equal(back, p) {
				t.Fatalf("%q: saved as %q, which parses to %q, %v", p, printed, back, err)
			}
		}
	})
}

// stringPkt is an IPv4 datagram of 20 header bytes, an 8-byte UDP header
// and payload: payload byte i is at offset 28+i.
func stringPkt(payload string) pkt {
	return pkt{proto: packet.ProtoUDP, l4: append(udpHdr(1000, 2000), payload...)}
}

func TestStringMatch(t *testing.T) {
	cases := []struct {
		opts    string
		payload string
		want    bool
	}{
		{"--algo bm --string XYZ", "..XYZ..", true},
		{"--algo kmp --string XYZ", "..XYZ..", true},
		{"--algo bm --string XYZ", "..XY.Z", false},
		{"--algo bm ! --string XYZ", "..XY.Z", true},
		// the window is [from, to) of the datagram, pattern wholly inside
		{"--algo bm --string XYZ --from 28 --to 31", "XYZ", true},
		{"--algo bm --string XYZ --from 28 --to 30", "XYZ", false},
		{"--algo kmp --string XYZ --from 28 --to 30", "XYZ", false},
		{"--algo bm --string XYZ --from 29", "XYZ", false},
		{"--algo kmp --string XYZ --from 29", ".XYZ", true},
		{"--algo bm --string XYZ --from 100", "XYZ", false},
		{"--algo bm ! --string XYZ --from 100", "XYZ", true},
		{"--algo kmp --string XYZ --to 0", "XYZ", false},
		// headers are searched too: 0x45 is the first byte, 0x07d0 the
		// UDP destination port 2000
		{"--algo bm --hex-string |45|", "", true},
		{"--algo kmp --hex-string |45| --from 1", "", false},
		{"--algo kmp --hex-string |07d0|", "", true},
		{"--algo bm --hex-string |07d0| --from 23", "", false},
		// case folding
		{"--algo bm --string xyz", "XYZ", false},
		{"--algo bm --string xyz --icase", "..XyZ", true},
		{"--algo kmp --string xyz --icase", "..XyZ", true},
		{"--algo kmp --hex-string |e9| --icase", "\xc9", true},
		{"--algo kmp --hex-string |df| --icase", "\xbf", true}, // toupper(0xdf) is 0xbf
		{"--algo kmp --hex-string |ff| --icase", "\xff", true},
		{"--algo kmp --hex-string |ff| --icase", "\xdf", false}, // 0xdf folds to 0xbf, the pattern to 0xdf
		{"--algo kmp --hex-string |f7| --icase", "\xd7", false}, // neither is a letter
		{"--algo kmp --hex-string |bf| --icase", "\xdf", true},
		// The kernel's bm misses these (seen on Linux 6.18, see
		// TestStringKernel): its bad-character table is indexed by the
		// raw byte, and 0xff is not in it for a pattern holding 0xdf.
		{"--algo bm --hex-string |dfff| --icase", "\xdf\xdf\xffb\xff", false},
		{"--algo kmp --hex-string |dfff| --icase", "\xdf\xdf\xffb\xff", true},
		{"--algo bm --hex-string |ff61| --icase", "\xff\xffA", false},
		{"--algo kmp --hex-string |ff61| --icase", "\xff\xffA", true},
		// repetitive patterns exercise the good-suffix table
		{"--algo bm --string abab", "aabaabab", true},
		{"--algo bm --string aaab", "aaaaaab", true},
		{"--algo bm --string abcab", "abcabdabcab", true},
	}
	for _, tc := range cases {
		m := mustBuild(t, "string", ruleAny, tc.opts)
		c := ctxFor(stringPkt(tc.payload).view())
		if got := m.Match(c); got != tc.want {
			t.Errorf("-m string %s on payload %q: Match = %v, want %v", tc.opts, tc.payload, got, tc.want)
		}
	}
}

// TestStringSearchAgainstNaive checks kmp against a plain search with the
// kernel's case folding, and that bm finds the same without --icase (with
// --icase over Latin-1 letters the kernel's bm can miss, so only ASCII).
func TestStringSearchAgainstNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 2))
	fold := func(text, pat []byte, icase bool) int {
		f := &identityBytes
		if icase {
			f = &kernelToUpper
		}
	outer:
		for i := 0; i+len(pat) <= len(text); i++ {
			for j := range pat {
				if f[text[i+j]] != f[pat[j]] {
					continue outer
				}
			}
			return i
		}
		return -1
	}
	ascii := []byte("abAB")
	latin := []byte{'a', 'A', 0xff, 0xdf, 0xbf, 0xe9, 0xc9}
	for it := 0; it < 100000; it++ {
		icase := it%2 == 1
		alpha := ascii
		if it%4 == 3 {
			alpha = latin
		}
		pat := make([]byte, 1+r.IntN(6))
		for i := range pat {
			pat[i] = alpha[r.IntN(len(alpha))]
		}
		text := make([]byte, r.IntN(24))
		for i := range text {
			text[i] = alpha[r.IntN(len(alpha))]
		}
		want := fold(text, pat, icase)
		k := &stringMatch{algo: algoKMP, pattern: pat, to: 0xffff, icase: icase}
		k.prepare()
		if got := k.findKMP(text); got != want {
			t.Fatalf("kmp %q (icase %v) in %q: %d, want %d", pat, icase, text, got, want)
		}
		if it%4 == 3 {
			continue
		}
		b := &stringMatch{algo: algoBM, pattern: pat, to: 0xffff, icase: icase}
		b.prepare()
		if got := b.findBM(text); got != want {
			t.Fatalf("bm %q (icase %v) in %q: %d, want %d", pat, icase, text, got, want)
		}
	}
}

func BenchmarkStringMatch(b *testing.B) {
	payload := strings.Repeat("GET /some/path/of/a/request HTTP/1.1\r\nHost: example.com\r\n", 20)
	for _, opts := range []string{
		"--algo bm --string User-Agent",
		"--algo kmp --string User-Agent",
		"--algo bm --string user-agent --icase",
		"--algo kmp --hex-string |deadbeef|",
	} {
		b.Run(opts, func(b *testing.B) {
			m := mustBuild(b, "string", ruleAny, opts)
			c := ctxFor(stringPkt(payload).view())
			b.SetBytes(int64(len(c.Pkt.Network)))
			b.ReportAllocs()
			for b.Loop() {
				m.Match(c)
			}
		})
	}
}

// ---- the real kernel ----

// kernelPath sends raw IPv4 datagrams through the OUTPUT hook of a
// throwaway network namespace, where a rule set counts them. The datagrams
// go out of a raw socket with IP_HDRINCL, so the rules see exactly the
// bytes given (the kernel only rewrites the total length, the checksum and
// a zero ID, which rawDatagram sets as the kernel would). All rules match
// protocol 253 only and a last rule drops the datagrams, so nothing else
// (no ICMP error, no reply) is ever counted.
type kernelPath struct {
	ns *netns.Namespace
	fd int
	// proto is the protocol the rules match and rawDatagram's default.
	proto uint8
}

const kernelTestProto = 253

func newKernelPath(t *testing.T) *kernelPath {
	t.Helper()
	kerneltest.Require(t, "ip", "iptables", "iptables-restore", "iptables-save")
	netns.CleanStale("qtm")
	ns, err := netns.New("qtm", "matchers")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	if _, err := ns.IP("link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	fd, err := ns.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &kernelPath{ns: ns, fd: fd, proto: kernelTestProto}
}

// load replaces the filter table with one rule per entry (the text after
// "-A OUTPUT -p 253") followed by the dropping rule.
func (k *kernelPath) load(t *testing.T, rules []string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "-A OUTPUT -p %d %s\n", k.proto, r)
	}
	fmt.Fprintf(&b, "-A OUTPUT -p %d -j DROP\nCOMMIT\n", k.proto)
	if out, err := k.ns.Exec([]byte(b.String()), "iptables-restore"); err != nil {
		t.Fatalf("iptables-restore: %v\n%s\n%s", err, out, b.String())
	}
}

// send hands one datagram to the kernel.
func (k *kernelPath) send(t *testing.T, dgram []byte) {
	t.Helper()
	// EPERM is the last rule's DROP, reported to the sender.
	err := unix.Sendto(k.fd, dgram, 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	if err != nil && err != unix.EPERM {
		t.Fatalf("sendto: %v", err)
	}
}

var kernelCounterRe = regexp.MustCompile(`(?m)^\[(\d+):\d+\] -A OUTPUT `)

// counts returns each rule's packet counter, the dropping rule left out.
// Sending is synchronous up to the OUTPUT hook, so every datagram sent
// before has been counted.
func (k *kernelPath) counts(t *testing.T) []uint64 {
	t.Helper()
	out, err := k.ns.Exec(nil, "iptables-save", "-c", "-t", "filter")
	if err != nil {
		t.Fatal(err)
	}
	var n []uint64
	for _, m := range kernelCounterRe.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseUint(string(m[1]), 10, 64)
		n = append(n, v)
	}
	if len(n) == 0 {
		t.Fatalf("no OUTPUT rules in:\n%s", out)
	}
	return n[:len(n)-1]
}

// rawDatagram returns an IPv4 datagram from and to 127.0.0.1 with protocol
// 253, the given ID (not 0) and payload, with a valid header checksum.
func rawDatagram(id uint16, payload []byte) []byte {
	return rawDatagramFrom(kernelTestProto, [4]byte{127, 0, 0, 1}, id, payload)
}

// rawDatagramFrom is rawDatagram with another protocol and source (which
// must be a local address, such as any in 127.0.0.0/8).
func rawDatagramFrom(proto uint8, src [4]byte, id uint16, payload []byte) []byte {
	d := make([]byte, 20+len(payload))
	d[0] = 0x45
	binary.BigEndian.PutUint16(d[2:], uint16(len(d)))
	binary.BigEndian.PutUint16(d[4:], id)
	d[8], d[9] = 64, proto
	copy(d[12:], src[:])
	copy(d[16:], []byte{127, 0, 0, 1})
	sum := uint32(0)
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(d[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(d[10:], ^uint16(sum))
	copy(d[20:], payload)
	return d
}

// viewOf decodes a datagram as the offline reader would.
func viewOf(t testing.TB, dgram []byte) *packet.View {
	t.Helper()
	d, err := packet.NewDecoder(packet.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	v := &packet.View{}
	d.Decode(dgram, v)
	if v.Class != packet.ClassOK {
		t.Fatalf("test datagram decodes as %v", v.Class)
	}
	return v
}

// TestStringKernel runs random string rules (both algorithms, offsets,
// hex, --icase with ASCII and Latin-1 letters, inversion) and random
// datagrams through the kernel and requires every rule's count to equal
// the number of datagrams qtables' Match accepts.
func TestStringKernel(t *testing.T) {
	k := newKernelPath(t)
	r := rand.New(rand.NewPCG(7, 7))
	alphabet := []byte{'a', 'b', 'A', 'B', 0xdf, 0xff, 0xbf, 0xe9, 0xc9, 0x00, 0x45}
	for round := 0; round < 4; round++ {
		var texts []string
		var ms []Match
		for range 40 {
			pat := make([]byte, 1+r.IntN(4))
			for i := range pat {
				pat[i] = alphabet[r.IntN(len(alphabet))]
			}
			var hexPat strings.Builder
			hexPat.WriteByte('|')
			for _, c := range pat {
				fmt.Fprintf(&hexPat, "%02x", c)
			}
			hexPat.WriteByte('|')
			argv := []string{"--algo", []string{"bm", "kmp"}[r.IntN(2)], "--hex-string", hexPat.String()}
			if r.IntN(4) == 0 {
				argv = append([]string{"!"}, argv[2:]...)
				argv = append(argv, "--algo", []string{"bm", "kmp"}[r.IntN(2)])
			}
			if r.IntN(2) == 0 {
				argv = append(argv, "--icase")
			}
			if r.IntN(3) == 0 {
				argv = append(argv, "--from", strconv.Itoa(r.IntN(30)))
			}
			if r.IntN(3) == 0 {
				argv = append(argv, "--to", strconv.Itoa(30+r.IntN(20)))
			}
			m, err := buildMatch("string", ruleAny, argv...)
			if err != nil {
				t.Fatalf("%q: %v", argv, err)
			}
			ms = append(ms, m)
			texts = append(texts, "-m string "+strings.Join(quoteArgs(argv), " "))
		}
		k.load(t, texts)
		want := make([]uint64, len(ms))
		for range 150 {
			payload := make([]byte, r.IntN(30))
			for i := range payload {
				payload[i] = alphabet[r.IntN(len(alphabet))]
			}
			d := rawDatagram(uint16(1+r.IntN(0xfffe)), payload)
			k.send(t, d)
			c := ctxFor(viewOf(t, d))
			for i, m := range ms {
				if m.Match(c) {
					want[i]++
				}
			}
		}
		got := k.counts(t)
		for i := range ms {
			if got[i] != want[i] {
				t.Errorf("%s: the kernel counts %d datagrams, qtables %d", texts[i], got[i], want[i])
			}
		}
	}
}

// quoteArgs quotes words for an iptables-restore line.
func quoteArgs(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \"'\\|") {
			a = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
		}
		out[i] = a
	}
	return out
}
