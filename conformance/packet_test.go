package conformance

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// ipChecksumOK verifies an IPv4 header checksum independently of gopacket.
func ipChecksumOK(h []byte) bool {
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return sum == 0xffff
}

func TestFrameLayout(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.0.2.9")
	cases := []struct {
		name string
		p    Packet
		ihl  int
	}{
		{"plain", Packet{Src: a, Dst: b, Proto: 17, TTL: 64, ID: 7, L4: make([]byte, 8)}, 5},
		{"options padded", Packet{Src: a, Dst: b, Proto: 6, TTL: 2, Options: []byte{7, 7, 4, 0, 0, 0, 0}, L4: make([]byte, 20)}, 7},
		{"nop options", Packet{Src: a, Dst: b, Proto: 1, TTL: 9, Options: []byte{1, 1, 1, 1, 1}, L4: nil}, 7},
		{"fragment with trailer", Packet{Src: a, Dst: b, Proto: 6, TTL: 30, FragOff: 185, MF: true, DF: true, Evil: true, L4: []byte{1, 2, 3}, Trailer: []byte{9, 9}}, 5},
	}
	src, dst := []byte{2, 0, 0, 0, 0, 1}, []byte{2, 0, 0, 0, 0, 2}
	for _, c := range cases {
		f, err := c.p.Frame(src, dst)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !bytes.Equal(f[0:6], dst) || !bytes.Equal(f[6:12], src) || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
			t.Errorf("%s: bad Ethernet header % x", c.name, f[:14])
		}
		ip := f[14:]
		if ip[0]>>4 != 4 || int(ip[0]&0xf) != c.ihl {
			t.Errorf("%s: version/IHL byte %#x, want IHL %d", c.name, ip[0], c.ihl)
		}
		hl := c.ihl * 4
		if !ipChecksumOK(ip[:hl]) {
			t.Errorf("%s: bad IPv4 header checksum", c.name)
		}
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if total != c.p.IPLen() || len(f) != max(60, 14+total+len(c.p.Trailer)) {
			t.Errorf("%s: total length %d, IPLen %d, frame %d", c.name, total, c.p.IPLen(), len(f))
		}
		if got := netip.AddrFrom4([4]byte(ip[12:16])); got != c.p.Src {
			t.Errorf("%s: src %v", c.name, got)
		}
		if ip[8] != c.p.TTL || ip[9] != c.p.Proto {
			t.Errorf("%s: ttl/proto %d/%d", c.name, ip[8], ip[9])
		}
		fw := binary.BigEndian.Uint16(ip[6:])
		if fw&0x1fff != c.p.FragOff || (fw&0x2000 != 0) != c.p.MF || (fw&0x4000 != 0) != c.p.DF || (fw&0x8000 != 0) != c.p.Evil {
			t.Errorf("%s: fragment word %#x", c.name, fw)
		}
		if !bytes.HasPrefix(ip[20:hl], c.p.Options) || strings.Trim(string(ip[20+len(c.p.Options):hl]), "\x00") != "" {
			t.Errorf("%s: options % x, want % x then zero padding", c.name, ip[20:hl], c.p.Options)
		}
		end := 14 + total + len(c.p.Trailer)
		if !bytes.Equal(ip[hl:total], c.p.L4) || !bytes.Equal(f[14+total:end], c.p.Trailer) || strings.Trim(string(f[end:]), "\x00") != "" {
			t.Errorf("%s: payload, trailer or zero padding wrong: % x", c.name, f)
		}
	}
	if _, err := (&Packet{Src: a, Dst: b, Options: []byte{7, 9, 4}}).Frame(src, dst); err == nil {
		t.Error("an option whose length runs past the option bytes was accepted")
	}
}

func TestTransportBuilders(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.0.2.9")
	seg, err := TCPSegment(a, b, 1234, 80, flagSYN|flagECE, []byte{2, 4, 5, 0xb4, 1}, 0, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	// 20 bytes + options padded to 8 + payload.
	if len(seg) != 30 || seg[12]>>4 != 7 || seg[13] != flagSYN|flagECE || binary.BigEndian.Uint16(seg[0:]) != 1234 || binary.BigEndian.Uint16(seg[2:]) != 80 {
		t.Errorf("TCP segment % x", seg)
	}
	if !bytes.Equal(seg[20:28], []byte{2, 4, 5, 0xb4, 1, 0, 0, 0}) || string(seg[28:]) != "hi" {
		t.Errorf("TCP options/payload % x", seg[20:])
	}
	bad, err := TCPSegment(a, b, 1, 2, 0, []byte{8, 0}, 15, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bad[12]>>4 != 15 || len(bad) != 22 {
		t.Errorf("forced data offset not kept: % x", bad)
	}
	// A correct TCP checksum over the pseudo header verifies to 0xffff.
	pseudo := append(append(a.AsSlice(), b.AsSlice()...), 0, 6, 0, byte(len(seg)))
	if !ipChecksumOK(append(pseudo, seg...)) {
		t.Error("TCP checksum wrong")
	}
	udp, err := UDPDatagram(a, b, 53, 5353, []byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(udp) != 11 || binary.BigEndian.Uint16(udp[4:]) != 11 || binary.BigEndian.Uint16(udp[2:]) != 5353 {
		t.Errorf("UDP datagram % x", udp)
	}
	icmp, err := ICMPMessage(3, 13, 1, 2, []byte{9})
	if err != nil {
		t.Fatal(err)
	}
	if len(icmp) != 9 || icmp[0] != 3 || icmp[1] != 13 || !ipChecksumOK(append(icmp, 0)) {
		t.Errorf("ICMP message % x", icmp)
	}
}

func TestForwardable(t *testing.T) {
	for s, want := range map[string]bool{
		"10.0.0.1": true, "240.0.0.1": true, "255.255.255.254": true, "100.64.1.1": true, "223.255.255.255": true,
		"0.0.0.0": false, "0.1.2.3": false, "127.0.0.1": false, "224.0.0.1": false, "239.255.255.255": false,
		"255.255.255.255": false, "100.64.0.1": false, "100.64.0.255": false,
	} {
		if got := Forwardable(netip.MustParseAddr(s)); got != want {
			t.Errorf("Forwardable(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestGeneratedPacketsAvoidDropClasses(t *testing.T) {
	for seed := uint64(0); seed < 40; seed++ {
		c := Generate(seed)
		for i, p := range c.Packets {
			bad := ""
			switch {
			case !Forwardable(p.Src) || !Forwardable(p.Dst):
				bad = "address"
			case p.TTL <= 1:
				bad = "ttl"
			case p.DF && p.IPLen() > EgressMTU:
				bad = "DF over MTU"
			case p.IPLen()+len(p.Trailer) > IngressMTU:
				bad = "over ingress MTU"
			case bytes.IndexByte(p.Options, 131) >= 0 && p.Options[0] == 131, len(p.Options) > 40:
				bad = "options"
			}
			if bad != "" {
				t.Fatalf("seed %d packet %d: %s: %s", seed, i, bad, p.String())
			}
		}
	}
}

func TestGeneratedRulesAvoidNftQuirks(t *testing.T) {
	for seed := uint64(0); seed < 200; seed++ {
		rules, _ := GenerateRules(newRand(seed))
		for _, l := range strings.Split(rules, "\n") {
			f := strings.Fields(l)
			for i := 0; i+2 < len(f); i++ {
				if f[i] == "!" && (f[i+1] == "-s" || f[i+1] == "-d" || strings.HasPrefix(f[i+1], "--s") || strings.HasPrefix(f[i+1], "--d")) && strings.HasSuffix(f[i+2], "/0") {
					t.Errorf("seed %d: inverted /0 address: %s", seed, l)
				}
				if f[i] == "--tcp-flags" && strings.EqualFold(f[i+1], "NONE") {
					t.Errorf("seed %d: zero flag mask: %s", seed, l)
				}
				if f[i] == "!" && (f[i+2] == ":" || f[i+2] == "0:65535") {
					t.Errorf("seed %d: inverted full port range: %s", seed, l)
				}
			}
			if strings.Count(l, "-m tcp ") > 1 || strings.Count(l, "-m udp ") > 1 {
				t.Errorf("seed %d: two tcp/udp matches: %s", seed, l)
			}
		}
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"foo":        "foo",
		"a-b_c:1":    "a-b_c:1",
		"allow ssh":  `"allow ssh"`,
		`a"b`:        `"a\"b"`,
		`back\slash`: `"back\\slash"`,
		"":           `""`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCompare(t *testing.T) {
	kernel := "# Generated by iptables-save v1.8.9 (nf_tables) on Thu\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [3:120]\n[2:80] -A FORWARD -p tcp\nCOMMIT\n# Completed\n"
	cases := []struct {
		name    string
		qtables string
		diff    []string
	}{
		{"equal with other comments", "# qtables\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [3:120]\n[2:80] -A FORWARD -p tcp\nCOMMIT\n", nil},
		{"policy counter", "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [4:160]\n[2:80] -A FORWARD -p tcp\nCOMMIT\n",
			[]string{"- :FORWARD DROP [3:120]", "+ :FORWARD DROP [4:160]"}},
		{"rule spelling", "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [3:120]\n[2:80] -A FORWARD -p 6\nCOMMIT\n",
			[]string{"- [2:80] -A FORWARD -p tcp", "+ [2:80] -A FORWARD -p 6"}},
		{"missing rule", "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [3:120]\nCOMMIT\n",
			[]string{"- [2:80] -A FORWARD -p tcp"}},
		{"extra line", "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [3:120]\n[2:80] -A FORWARD -p tcp\n[0:0] -A FORWARD\nCOMMIT\n",
			[]string{"+ [0:0] -A FORWARD"}},
		{"empty output", "", []string{"- *filter", "- :INPUT ACCEPT [0:0]", "- :FORWARD DROP [3:120]", "- [2:80] -A FORWARD -p tcp", "- COMMIT"}},
	}
	for _, c := range cases {
		var got []string
		for _, d := range Compare([]byte(kernel), []byte(c.qtables)) {
			got = append(got, d.String())
		}
		if strings.Join(got, "\n") != strings.Join(c.diff, "\n") {
			t.Errorf("%s: diff\n%s\nwant\n%s", c.name, strings.Join(got, "\n"), strings.Join(c.diff, "\n"))
		}
	}
}

func TestWritePcap(t *testing.T) {
	c := Generate(5)
	frames, err := c.Frames(testMAC1, testMAC2)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "p.pcap")
	if err := WritePcap(path, frames); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("link type %v", r.LinkType())
	}
	for i := 0; ; i++ {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			if i != len(frames) {
				t.Errorf("read %d packets, wrote %d (%v)", i, len(frames), err)
			}
			break
		}
		if !bytes.Equal(data, frames[i]) || ci.Length != len(frames[i]) {
			t.Fatalf("packet %d differs", i)
		}
		// gopacket decodes it as Ethernet/IPv4 with the right addresses.
		pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip == nil || !ip.SrcIP.Equal(c.Packets[i].Src.AsSlice()) {
			t.Fatalf("packet %d does not decode as the generated IPv4 packet", i)
		}
	}
}
