package conformance

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/qtables/qtables/engine"
)

// TestGenerateStateDeterministic: a case is a pure function of its seed.
func TestGenerateStateDeterministic(t *testing.T) {
	for seed := uint64(1); seed < 20; seed++ {
		a, b := GenerateState(seed, false), GenerateState(seed, false)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("seed %d: two different cases", seed)
		}
	}
	if reflect.DeepEqual(GenerateState(1, false).Rules, GenerateState(2, false).Rules) {
		t.Error("seeds 1 and 2 give the same rules")
	}
}

// TestGenerateStatePackets decodes every generated packet with gopacket
// and checks what the kernel comparison relies on: valid checksums (the
// kernel's conntrack checks them), no fragments (conntrack reassembles),
// forwardable addresses injected on their side, and every kind of packet.
func TestGenerateStatePackets(t *testing.T) {
	src, dst := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	kinds := map[string]int{}
	for seed := uint64(1); seed <= 200; seed++ {
		c := GenerateState(seed, false)
		for i, p := range c.Packets {
			kinds[p.Note]++
			if !Forwardable(p.Src) || !Forwardable(p.Dst) {
				t.Fatalf("seed %d packet %d: %v -> %v not forwardable", seed, i, p.Src, p.Dst)
			}
			if ClientNet.Contains(p.Src) == p.FromSink {
				t.Fatalf("seed %d packet %d (%s): source %v injected on the wrong side", seed, i, p.Note, p.Src)
			}
			if p.MF || p.FragOff != 0 {
				t.Fatalf("seed %d packet %d: a fragment", seed, i)
			}
			f, err := p.Packet.Frame(src, dst)
			if err != nil {
				t.Fatal(err)
			}
			pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
			// Errors decoding what gopacket takes for an application
			// layer (NTP on port 123, ...) do not matter.
			if el := pkt.ErrorLayer(); el != nil && pkt.TransportLayer() == nil && p.Proto != 1 && p.Proto != 253 {
				t.Fatalf("seed %d packet %d (%s): %v", seed, i, p.Note, el.Error())
			}
			ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if sum := transportSum(ip); sum != 0xffff && p.Proto != 253 {
				t.Fatalf("seed %d packet %d (%s): transport checksum sums to %#x", seed, i, p.Note, sum)
			}
		}
	}
	for _, note := range []string{"SYN", "SYN/ACK", "data", "data retransmitted", "data out of window", "FIN", "RST",
		"RST/ACK: refused", "SYN reopening", "UDP request", "UDP response", "UDP from the server side first",
		"echo request", "echo reply", "echo reply without request", "timestamp request", "lone FIN", "SYN+FIN",
		"ACK of no connection (picked up)", "ICMP error quoting the first packet", "ICMP error quoting the reply",
		"ICMP error quoting the first packet, to another host", "ICMP error quoting nothing tracked", "protocol 253"} {
		if kinds[note] == 0 {
			t.Errorf("200 cases have no %q packet", note)
		}
	}
}

// transportSum is the ones' complement sum of the pseudo header and the
// transport bytes (ICMP: the message alone); 0xffff when the checksum is
// right.
func transportSum(ip *layers.IPv4) uint16 {
	b := ip.Payload
	if ip.Protocol == layers.IPProtocolICMPv4 {
		return onesSum(0, b)
	}
	var ph [12]byte
	copy(ph[0:], ip.SrcIP.To4())
	copy(ph[4:], ip.DstIP.To4())
	ph[9] = byte(ip.Protocol)
	ph[10], ph[11] = byte(len(b)>>8), byte(len(b))
	return onesSum(onesSum(0, ph[:]), b)
}

// TestGenerateStateRules loads every generated rule set into qtables and
// checks the matches the stateful cases are for all appear.
func TestGenerateStateRules(t *testing.T) {
	dir := t.TempDir()
	seen := map[string]bool{}
	for seed := uint64(1); seed <= 200; seed++ {
		c := GenerateState(seed, false)
		path := filepath.Join(dir, "rules")
		if err := os.WriteFile(path, []byte(c.Rules), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := engine.LoadFile(path); err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, c.Rules)
		}
		for _, w := range []string{"-m state", "--ctstate", "--ctproto", "--ctorigsrc", "--ctrepldstport", "--ctstatus",
			"--ctexpire", "--ctdir", "-m connlimit", "--connlimit-daddr", "-m connmark", "-m connbytes", "avgpkt",
			"-j CONNMARK", "--save-mark", "--restore-mark", "-shift-mark", "-j MARK", "-j REJECT"} {
			if strings.Contains(c.Rules, w) {
				seen[w] = true
			}
		}
		if strings.Contains(c.Rules, "-m connlimit") != (c.Pace > 0) {
			t.Errorf("seed %d: pace %v with connlimit %v", seed, c.Pace, strings.Contains(c.Rules, "connlimit"))
		}
		if nc := GenerateState(seed, true); strings.Contains(nc.Rules, "--ctexpire") {
			t.Errorf("seed %d: --ctexpire generated although left out", seed)
		}
	}
	for _, w := range []string{"-m state", "--ctstate", "--ctproto", "--ctorigsrc", "--ctrepldstport", "--ctstatus",
		"--ctexpire", "--ctdir", "-m connlimit", "--connlimit-daddr", "-m connmark", "-m connbytes", "avgpkt",
		"-j CONNMARK", "--save-mark", "--restore-mark", "-shift-mark", "-j MARK", "-j REJECT"} {
		if !seen[w] {
			t.Errorf("200 rule sets never use %q", w)
		}
	}
}
