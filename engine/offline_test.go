package engine

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// udpFrame encodes an Ethernet/IPv4/UDP frame with gopacket.
func udpFrame(t testing.TB, src, dst string, sport, dport uint16) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(make([]byte, 12))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeCapture(t testing.TB, frames [][]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.pcap")
	w, err := packet.CreateCapture(path, packet.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, f := range frames {
		if err := w.WritePacket(base.Add(time.Duration(i)*time.Millisecond), f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func compileRules(t testing.TB, rules string) *Program {
	t.Helper()
	rs, err := Parse("rules", strings.NewReader(rules))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(rs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOfflineTracking checks the order in which Run tracks: before the
// rules, confirming on ACCEPT and QUEUE, forgetting on DROP; and the
// interfaces chosen per address.
func TestOfflineTracking(t *testing.T) {
	req := udpFrame(t, "10.0.0.1", "192.0.2.1", 1000, 53)
	rsp := udpFrame(t, "192.0.2.1", "10.0.0.1", 53, 1000)
	capture := writeCapture(t, [][]byte{req, req, rsp, req})
	prog := compileRules(t, `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -i wan -o lan -m state --state ESTABLISHED -j ACCEPT
-A FORWARD -m state --state NEW -m limit --limit 1/hour --limit-burst 1 -j DROP
-A FORWARD -m state --state NEW -j NFQUEUE --queue-num 1
COMMIT
`)
	var got []string
	off := &Offline{Chain: "FORWARD", In: "lan", Out: "wan",
		InMap:  []PrefixIface{{Prefix: mustPrefix(t, "192.0.2.0/24"), Iface: "wan"}},
		OutMap: []PrefixIface{{Prefix: mustPrefix(t, "10.0.0.0/8"), Iface: "lan"}}}
	_, err := off.Run(context.Background(), prog, capture, func(v *Verdict) error {
		info, _, _ := v.Ctx.CtState()
		got = append(got, info.String()+" "+v.Result.Verdict.String()+" "+v.Ctx.In+">"+v.Ctx.Out)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"NEW DROP lan>wan",           // the first request is dropped: its connection forgotten
		"NEW QUEUE 1 lan>wan",        // NEW again; queued: confirmed
		"ESTABLISHED ACCEPT wan>lan", // the answer
		"ESTABLISHED ACCEPT lan>wan", // the policy
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("verdicts:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	pi, err := ParsePrefixIface(s + "=x")
	if err != nil {
		t.Fatal(err)
	}
	return pi.Prefix
}

// TestOfflineNoAllocs: once the connections exist, tracking and
// evaluating a packet allocates nothing; the run's allocations do not
// grow with the number of packets.
func TestOfflineNoAllocs(t *testing.T) {
	prog := compileRules(t, `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A FORWARD -m state --state NEW -m connlimit --connlimit-above 100 -j DROP
-A FORWARD -m state --state NEW -j CONNMARK --set-mark 1
-A FORWARD -m connmark --mark 1 -j ACCEPT
COMMIT
`)
	frames := func(n int) [][]byte {
		var fs [][]byte
		for i := range n {
			p := uint16(1000 + i%8)
			fs = append(fs, udpFrame(t, "10.0.0.1", "192.0.2.1", p, 53), udpFrame(t, "192.0.2.1", "10.0.0.1", 53, p))
		}
		return fs
	}
	mallocs := func(path string) uint64 {
		off := &Offline{Chain: "FORWARD", Conntrack: conntrack.New(conntrack.Config{Shards: 4})}
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		if _, err := off.Run(context.Background(), prog, path, func(v *Verdict) error {
			if v.Result.Verdict != matchers.Accept {
				t.Fatalf("frame %d: %v", v.Frame, v.Result.Verdict)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&m1)
		return m1.Mallocs - m0.Mallocs
	}
	small, large := writeCapture(t, frames(100)), writeCapture(t, frames(2100))
	a, b := mallocs(small), mallocs(large)
	t.Logf("200 packets: %d allocations, 4200 packets: %d", a, b)
	if b > a+100 { // 4000 more packets
		t.Errorf("200 packets: %d allocations, 4200 packets: %d", a, b)
	}
}
