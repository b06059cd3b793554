package conformance

import (
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qtables/qtables/internal/netns"
)

// requireKernel skips the test, or fails it when CI is set, if the machine
// cannot run kernel tests.
func requireKernel(t *testing.T) {
	t.Helper()
	if err := CheckTools(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("kernel conformance tests cannot run: %v (CI is set, so this fails instead of skipping)", err)
		}
		t.Skipf("kernel conformance tests skipped: %v (run as root with iproute2 and iptables installed)", err)
	}
}

var cleanOnce sync.Once

// newTopology builds the test network, removed when the test ends.
func newTopology(t *testing.T) *Topology {
	t.Helper()
	requireKernel(t)
	cleanOnce.Do(func() {
		deleted, err := netns.CleanStale(NamespacePrefix)
		if err != nil {
			t.Logf("cleaning stale namespaces: %v", err)
		}
		if len(deleted) > 0 {
			t.Logf("removed namespaces left by a killed run: %v", deleted)
		}
	})
	topo, err := NewTopology()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("removing topology: %v", err)
		}
	})
	return topo
}

// reachesForward sends p followed by a marker packet known to be
// forwarded, waits for the marker, and reports whether p was counted too.
func reachesForward(t *testing.T, topo *Topology, p Packet) bool {
	t.Helper()
	pf, err := p.Frame(topo.SrcMAC, topo.FWMAC)
	if err != nil {
		t.Fatal(err)
	}
	return reachesForwardFrame(t, topo, pf)
}

func reachesForwardFrame(t *testing.T, topo *Topology, pf []byte) bool {
	t.Helper()
	marker := Packet{Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"), Proto: 17, TTL: 64, L4: make([]byte, 8)}
	mf, err := marker.Frame(topo.SrcMAC, topo.FWMAC)
	if err != nil {
		t.Fatal(err)
	}
	base, err := topo.ForwardCount()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range [][]byte{pf, mf} {
		if err := topo.conn.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	end := time.Now().Add(5 * time.Second)
	for {
		n, err := topo.ForwardCount()
		if err != nil {
			t.Fatal(err)
		}
		switch d := n - base; {
		case d >= 2:
			return true
		case d == 1:
			// The marker (or the probe) arrived. Both were written from
			// one thread and are processed in order on the sending CPU, so
			// one more read settles it.
			n2, err := topo.ForwardCount()
			if err != nil {
				t.Fatal(err)
			}
			return n2-base >= 2
		}
		if time.Now().After(end) {
			t.Fatalf("marker packet never reached FORWARD")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestKernelDropClasses pins down, on the running kernel, the packet
// classes the package documentation lists: those the kernel drops before
// FORWARD (the generator avoids them) and borderline ones it forwards (the
// generator keeps them).
func TestKernelDropClasses(t *testing.T) {
	topo := newTopology(t)
	if err := topo.LoadRules("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	payload := func(n int) []byte { return make([]byte, n) }
	cases := []struct {
		name    string
		forward bool
		mod     func(p *Packet)
	}{
		{"plain udp", true, func(p *Packet) {}},
		// dropped before FORWARD
		{"src 0.0.0.0", false, func(p *Packet) { p.Src = a("0.0.0.0") }},
		{"src loopback", false, func(p *Packet) { p.Src = a("127.0.0.1") }},
		{"src multicast", false, func(p *Packet) { p.Src = a("224.0.0.1") }},
		{"src limited broadcast", false, func(p *Packet) { p.Src = a("255.255.255.255") }},
		{"src FW address", false, func(p *Packet) { p.Src = a("100.64.0.2") }},
		{"dst 0.0.0.0", false, func(p *Packet) { p.Dst = a("0.0.0.0") }},
		{"dst loopback", false, func(p *Packet) { p.Dst = a("127.0.0.1") }},
		{"dst multicast", false, func(p *Packet) { p.Dst = a("239.1.1.1") }},
		{"dst limited broadcast", false, func(p *Packet) { p.Dst = a("255.255.255.255") }},
		{"dst FW address", false, func(p *Packet) { p.Dst = a("100.64.0.5") }},
		{"dst egress subnet broadcast", false, func(p *Packet) { p.Dst = a("100.64.0.7") }},
		{"ttl 0", false, func(p *Packet) { p.TTL = 0 }},
		{"ttl 1", false, func(p *Packet) { p.TTL = 1 }},
		{"DF over egress MTU", false, func(p *Packet) { p.DF = true; p.L4 = payload(EgressMTU - 19) }},
		{"loose source route option", false, func(p *Packet) { p.Options = []byte{131, 7, 4, 10, 9, 9, 9} }},
		{"strict source route option", false, func(p *Packet) { p.Options = []byte{137, 7, 4, 10, 9, 9, 9} }},
		{"CIPSO option", false, func(p *Packet) { p.Options = []byte{134, 6, 0, 0, 0, 1} }},
		// forwarded
		{"src 0.1.2.3", true, func(p *Packet) { p.Src = a("0.1.2.3") }},
		{"src class E", true, func(p *Packet) { p.Src = a("240.0.0.1") }},
		{"dst class E", true, func(p *Packet) { p.Dst = a("255.255.255.254") }},
		{"src link-local", true, func(p *Packet) { p.Src = a("169.254.1.1") }},
		{"src equals dst", true, func(p *Packet) { p.Src = p.Dst }},
		{"ttl 2", true, func(p *Packet) { p.TTL = 2 }},
		{"reserved flag", true, func(p *Packet) { p.Evil = true }},
		{"first fragment", true, func(p *Packet) { p.MF = true }},
		{"fragment offset 1", true, func(p *Packet) { p.FragOff = 1 }},
		{"last fragment", true, func(p *Packet) { p.FragOff = 100 }},
		{"fragment past 64 KiB", true, func(p *Packet) { p.FragOff = 8191; p.L4 = payload(100) }},
		{"empty fragment", true, func(p *Packet) { p.FragOff = 3; p.L4 = nil }},
		{"over egress MTU without DF", true, func(p *Packet) { p.L4 = payload(IngressMTU - 20) }},
		{"DF at egress MTU", true, func(p *Packet) { p.DF = true; p.L4 = payload(EgressMTU - 20) }},
		{"no transport bytes", true, func(p *Packet) { p.L4 = nil }},
		{"protocol 0", true, func(p *Packet) { p.Proto = 0 }},
		{"protocol 255", true, func(p *Packet) { p.Proto = 255 }},
		{"link padding", true, func(p *Packet) { p.Trailer = payload(10) }},
		{"bad udp checksum", true, func(p *Packet) { p.L4 = []byte{0, 1, 0, 2, 0, 8, 0xde, 0xad} }},
		{"NOP options", true, func(p *Packet) { p.Options = []byte{1, 1, 1, 1} }},
		{"record route", true, func(p *Packet) { p.Options = []byte{7, 7, 4, 0, 0, 0, 0} }},
		{"full record route", true, func(p *Packet) { p.Options = []byte{7, 7, 8, 1, 2, 3, 4} }},
		{"timestamp", true, func(p *Packet) { p.Options = []byte{68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0} }},
		{"router alert", true, func(p *Packet) { p.Options = []byte{148, 4, 0, 0} }},
		{"stream id", true, func(p *Packet) { p.Options = []byte{136, 4, 0, 1} }},
		{"unknown option", true, func(p *Packet) { p.Options = []byte{30, 4, 0, 0} }},
	}
	for _, c := range cases {
		p := Packet{Src: a("10.1.1.1"), Dst: a("10.2.2.2"), Proto: 17, TTL: 64, L4: payload(8)}
		c.mod(&p)
		if got := reachesForward(t, topo, p); got != c.forward {
			t.Errorf("%s (%s): reached FORWARD = %v, want %v", c.name, p.String(), got, c.forward)
		}
	}
	// A bad IPv4 header checksum is dropped in ip_rcv.
	p := Packet{Src: a("10.1.1.1"), Dst: a("10.2.2.2"), Proto: 17, TTL: 64, L4: payload(8)}
	f, err := p.Frame(topo.SrcMAC, topo.FWMAC)
	if err != nil {
		t.Fatal(err)
	}
	f[14+10] ^= 0xff
	if reachesForwardFrame(t, topo, f) {
		t.Error("a packet with a bad IPv4 header checksum reached FORWARD")
	}
	// Frames not addressed to b0's MAC are not forwarded.
	for _, mac := range [][]byte{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x01, 0x00, 0x5e, 0, 0, 1}, {0x02, 0, 0, 0, 0, 0x99}} {
		f, _ := p.Frame(topo.SrcMAC, mac)
		if reachesForwardFrame(t, topo, f) {
			t.Errorf("a frame to MAC %x reached FORWARD", mac)
		}
	}
}

// TestKernelForwardSeesDecrementedTTL pins down that FORWARD rules see the
// TTL after the forwarding decrement (ip_forward decrements it before the
// hook), which the generator and qtables must both take into account.
func TestKernelForwardSeesDecrementedTTL(t *testing.T) {
	topo := newTopology(t)
	rules := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -m ttl --ttl-eq 64\n-A FORWARD -m ttl --ttl-eq 63\nCOMMIT\n"
	if err := topo.LoadRules(rules); err != nil {
		t.Fatal(err)
	}
	p := Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Proto: 17, TTL: 64, L4: make([]byte, 8)}
	f, err := p.Frame(topo.SrcMAC, topo.FWMAC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topo.Send([][]byte{f}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	out, err := topo.SaveFilter()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[0:0] -A FORWARD -m ttl --ttl-eq 64\n", "[1:28] -A FORWARD -m ttl --ttl-eq 63\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("iptables-save lacks %q:\n%s", want, out)
		}
	}
}
