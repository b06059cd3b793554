package conformance

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestKernelEdgeCases runs hand-written rule sets and packets through the
// kernel and qtables and requires identical iptables-save -c output. The
// packets are the ones where the installed iptables-nft (1.8.9) and the
// xt modules part ways: tcp and udp matches that iptables-nft turns into
// payload expressions read non-first fragments as headers, fail only the
// fields whose bytes are missing and never hot-drop, while the xt matches
// it keeps (--tcp-option, "-m tcp"/"-m udp" with nothing to translate) do
// hot-drop fragment offset 1 and short headers. The rule sets also hold
// every print form of tcp and udp that iptables-nft rewrites or drops, so
// the comparison checks those too. Each rule set puts the hot-dropping xt
// rules after the payload ones, or first, so that hotdrop ordering shows
// in the counters.
//
// A set that differs is rerun one packet at a time, and each packet that
// differs on its own is reported.
func TestKernelEdgeCases(t *testing.T) {
	requireKernel(t)
	work := t.TempDir()
	bin := buildQtables(t, work)
	topo := newTopology(t)
	pkts := edgePackets(t)
	for i, set := range edgeRuleSets {
		t.Run(set.name, func(t *testing.T) {
			c := &Case{Seed: uint64(i), Rules: set.rules(), Packets: pkts}
			res, err := RunCase(topo, c, bin, work)
			if err != nil {
				t.Fatalf("%v\nrule set:\n%s", err, numbered(c.Rules))
			}
			defer os.RemoveAll(res.Dir)
			for _, f := range set.facts {
				f.check(t, topo, bin, work, c)
			}
			if len(res.Diff) == 0 {
				return
			}
			t.Errorf("%s", res.Report())
			for j, p := range pkts {
				one := &Case{Seed: uint64(i), Rules: c.Rules, Packets: []Packet{p}}
				r, err := RunCase(topo, one, bin, work)
				if err != nil {
					t.Fatalf("packet %d alone: %v", j, err)
				}
				os.RemoveAll(r.Dir)
				if len(r.Diff) > 0 {
					var b strings.Builder
					for _, d := range r.Diff {
						fmt.Fprintf(&b, "    %s\n", d)
					}
					t.Errorf("packet %d (%s) alone differs (- kernel, + qtables):\n%s", j, p.String(), b.String())
				}
			}
		})
	}
}

// edgeRuleSet is a FORWARD chain of rules without targets (each only
// counts), with facts about single packets that the kernel must show.
type edgeRuleSet struct {
	name  string
	rules func() string
	facts []edgeFact
}

// edgeFact is what the kernel counts for one packet alone: rules (as
// iptables-save prints them after "-A FORWARD ") that must count it and
// rules that must not, and whether it is dropped (hotdrop) before the
// chain's policy sees it. These are the lead's measurements, kept as
// assertions so that a kernel or iptables that behaves otherwise is
// noticed rather than silently followed.
type edgeFact struct {
	what      string
	packet    func(t *testing.T) Packet
	matched   []string
	unmatched []string
	dropped   bool
}

// filterTable wraps FORWARD rules into iptables-restore text.
func filterTable(forward []string) string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, r := range forward {
		b.WriteString("-A FORWARD " + r + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// with prefixes each option string with "-p P -m M".
func with(prefix string, opts ...string) []string {
	out := make([]string, len(opts))
	for i, o := range opts {
		out[i] = strings.TrimSpace(prefix + " " + o)
	}
	return out
}

// portForms are the port options of every form the installed iptables
// prints in its own way, for one of --sport or --dport.
func portForms(opt string) []string {
	var out []string
	for _, f := range []string{"%s 80", "! %s 80", "%s 10:20", "! %s 10:20", "%s 0:20", "! %s 0:20",
		"%s 20:65535", "! %s 20:65535", "%s 0", "! %s 0", "%s 65535", "! %s 65535", "%s 0:0",
		"! %s 0:65534", "! %s 0:65535", "! %s :"} {
		out = append(out, fmt.Sprintf(f, opt))
	}
	return out
}

// Payload-expression (native) tcp and udp forms, and the xt (compat) ones.
var (
	tcpNativeForms = append(append(portForms("--dport"), portForms("--sport")...),
		"--sport 80 --dport 80", "! --sport 80 ! --dport 80", "! --sport 80 --dport 80",
		"--sport 0 --dport 80", "! --sport 0 ! --dport 80", "! --sport 0:20 ! --dport 0:30",
		"--sport 10:20 ! --dport 80", "! --sport : --dport 80",
		"--tcp-flags SYN SYN", "! --tcp-flags SYN SYN", "--tcp-flags SYN,ACK ACK", "--tcp-flags ALL NONE",
		"--tcp-flags NONE SYN", "! --tcp-flags NONE SYN", "! --tcp-flags NONE NONE", "--tcp-flags SYN SYN,ACK",
		"--syn", "! --syn", "--syn --dport 80", "! --syn ! --dport 0:20", "--tcp-flags NONE SYN --dport 80")
	tcpCompatForms = []string{
		"--tcp-option 8", "! --tcp-option 8", "--tcp-option 8 ! --dport :", "--tcp-option 8 ! --dport 0:20",
		"--tcp-option 8 --dport 80 --syn", "--tcp-option 8 --tcp-flags NONE SYN",
		"--tcp-option 8 ! --tcp-flags NONE NONE", "! --tcp-option 8 ! --sport 80 ! --dport 80",
		"", "--dport :", "--sport 0:65535", "--tcp-flags NONE NONE",
	}
	udpNativeForms = append(append(portForms("--dport"), portForms("--sport")...),
		"--sport 80 --dport 80", "! --sport 80 ! --dport 80", "! --sport 0 ! --dport 80",
		"--dport 4:3", "! --dport 4:3", "--dport 5:0")
	udpCompatForms = []string{"", "--dport :", "--sport 0:65535"}
)

var edgeRuleSets = []edgeRuleSet{
	{
		name: "native then xt",
		rules: func() string {
			var r []string
			r = append(r, with("-p tcp -m tcp", tcpNativeForms...)...)
			r = append(r, with("-p udp -m udp", udpNativeForms...)...)
			r = append(r, with("! -p tcp -m tcp", "--dport 80", "! --dport 0:20", "--syn", "! --dport :")...)
			r = append(r, with("! -p udp -m udp", "--sport 80", "! --sport :")...)
			r = append(r, with("-p tcp -m tcp", tcpCompatForms...)...)
			r = append(r, with("-p udp -m udp", udpCompatForms...)...)
			return filterTable(r)
		},
		facts: []edgeFact{
			{what: "tcp fragment at offset 1 read as a header, then hot-dropped by the xt match",
				packet: func(t *testing.T) Packet { return tcpFragment(t, 1, false) },
				matched: []string{"-p tcp -m tcp --dport 80", "-p tcp -m tcp --sport 80",
					"-p tcp -m tcp --tcp-flags SYN SYN", "-p tcp -m tcp --sport 80 --dport 80", "-p tcp"},
				unmatched: []string{"-p tcp -m tcp ! --dport 80", "-p tcp -m tcp ! --tcp-option 8", "-p tcp -m tcp"},
				dropped:   true},
			{what: "tcp fragment at offset 2 read as a header; xt matches fail without hotdrop",
				packet:    func(t *testing.T) Packet { return tcpFragment(t, 2, true) },
				matched:   []string{"-p tcp -m tcp --dport 80", "-p tcp -m tcp --tcp-flags SYN SYN", "-p tcp"},
				unmatched: []string{"-p tcp -m tcp ! --tcp-option 8", "-p tcp -m tcp"}},
			{what: "2 bytes of tcp: the source port is there, the destination port is not",
				packet:  func(t *testing.T) Packet { return tcpPrefix(t, 2, 80, 80) },
				matched: []string{"-p tcp -m tcp --sport 80", "-p tcp"},
				unmatched: []string{"-p tcp -m tcp --dport 80", "-p tcp -m tcp ! --dport 80",
					"-p tcp -m tcp --sport 80 --dport 80", "-p tcp -m tcp ! --dport 10:20"},
				dropped: true},
			{what: "4 bytes of tcp: both ports, no flags",
				packet:    func(t *testing.T) Packet { return tcpPrefix(t, 4, 80, 80) },
				matched:   []string{"-p tcp -m tcp --dport 80", "-p tcp -m tcp --sport 80 --dport 80", "-p tcp"},
				unmatched: []string{"-p tcp -m tcp --tcp-flags SYN SYN", "-p tcp -m tcp ! --tcp-flags SYN SYN"},
				dropped:   true},
			{what: "14 bytes of tcp: the flags byte is there",
				packet:  func(t *testing.T) Packet { return tcpPrefix(t, 14, 80, 81) },
				matched: []string{"-p tcp -m tcp ! --dport 80", "-p tcp -m tcp --tcp-flags SYN SYN"},
				dropped: true},
			{what: "no tcp bytes: only the vanished matches count",
				packet:    func(t *testing.T) Packet { return tcpPrefix(t, 0, 80, 80) },
				matched:   []string{"-p tcp"},
				unmatched: []string{"-p tcp -m tcp --sport 80", "-p tcp -m tcp ! --sport 80", "-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN"},
				dropped:   true},
			{what: "udp fragment read as a header; xt udp fails without hotdrop",
				packet:    func(t *testing.T) Packet { return udpFragment(t, 1) },
				matched:   []string{"-p udp -m udp --dport 80", "-p udp"},
				unmatched: []string{"-p udp -m udp"}},
			{what: "4 bytes of udp: the ports are there, xt udp hot-drops",
				packet:  func(t *testing.T) Packet { return udpPrefix(t, 4, 80, 80) },
				matched: []string{"-p udp -m udp --dport 80", "-p udp"},
				dropped: true},
			{what: "inverted port pair: iptables-nft 1.8.9 compares both ports as one word",
				packet:  func(t *testing.T) Packet { return tcpPrefix(t, 20, 80, 81) },
				matched: []string{"-p tcp -m tcp ! --sport 80 ! --dport 80"},
				// The xt match (kept for --tcp-option) inverts each port.
				unmatched: []string{"-p tcp -m tcp ! --sport 80 ! --dport 80 ! --tcp-option 8"}},
		},
	},
	{
		name: "xt first",
		rules: func() string {
			var r []string
			r = append(r, with("-p tcp -m tcp", "--tcp-option 2", "--dport 80", "--sport 80", "! --dport :")...)
			r = append(r, with("-p udp -m udp", "", "--dport 80", "! --dport :")...)
			return filterTable(r)
		},
		facts: []edgeFact{
			{what: "hot-dropped before the payload rules",
				packet:    func(t *testing.T) Packet { return tcpPrefix(t, 4, 80, 80) },
				unmatched: []string{"-p tcp -m tcp --dport 80", "-p tcp -m tcp --sport 80", "-p tcp"},
				dropped:   true},
			{what: "offset 2: the xt match fails quietly, the payload rules read the fragment",
				packet:  func(t *testing.T) Packet { return tcpFragment(t, 2, false) },
				matched: []string{"-p tcp -m tcp --dport 80", "-p tcp -m tcp --sport 80", "-p tcp"}},
		},
	},
}

var (
	edgeSrc = netip.MustParseAddr("10.1.0.1")
	edgeDst = netip.MustParseAddr("10.2.0.1")
)

// tcpHeader is a complete TCP header (checksummed) with 4 bytes of payload.
func tcpHeader(t *testing.T, sport, dport uint16, flags uint8, opts []byte, doff uint8) []byte {
	t.Helper()
	b, err := TCPSegment(edgeSrc, edgeDst, sport, dport, flags, opts, doff, []byte{1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func udpHeader(t *testing.T, sport, dport uint16) []byte {
	t.Helper()
	b, err := UDPDatagram(edgeSrc, edgeDst, sport, dport, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func edgePacket(proto uint8, l4 []byte) Packet {
	return Packet{Src: edgeSrc, Dst: edgeDst, Proto: proto, TTL: 64, L4: l4}
}

// tcpPrefix is a TCP packet that carries only the first n bytes of a
// header with SYN set.
func tcpPrefix(t *testing.T, n int, sport, dport uint16) Packet {
	return edgePacket(6, tcpHeader(t, sport, dport, flagSYN, nil, 0)[:n])
}

func udpPrefix(t *testing.T, n int, sport, dport uint16) Packet {
	return edgePacket(17, udpHeader(t, sport, dport)[:n])
}

// tcpFragment is a non-first fragment whose data looks like a TCP header
// (ports 80 -> 80, SYN), as an overlapping-fragment attack would send it.
func tcpFragment(t *testing.T, off uint16, mf bool) Packet {
	p := edgePacket(6, tcpHeader(t, 80, 80, flagSYN, nil, 0))
	p.FragOff, p.MF = off, mf
	return p
}

func udpFragment(t *testing.T, off uint16) Packet {
	p := edgePacket(17, udpHeader(t, 80, 80))
	p.FragOff = off
	return p
}

// edgePackets are the packets every rule set sees.
func edgePackets(t *testing.T) []Packet {
	var ps []Packet
	// Complete headers on and next to every bound the forms use.
	for _, sport := range []uint16{0, 20, 21, 80, 65535} {
		for _, dport := range []uint16{0, 3, 4, 10, 20, 21, 31, 80, 81, 65534, 65535} {
			for _, flags := range []uint8{flagSYN, flagSYN | flagACK, flagACK, 0} {
				ps = append(ps, edgePacket(6, tcpHeader(t, sport, dport, flags, nil, 0)))
			}
			ps = append(ps, edgePacket(17, udpHeader(t, sport, dport)))
		}
	}
	// TCP options: the timestamp (8) present, absent, and a data offset
	// below 5 words (the xt match hot-drops it when it looks for options).
	ts := []byte{8, 10, 0, 0, 0, 1, 0, 0, 0, 0}
	ps = append(ps,
		edgePacket(6, tcpHeader(t, 80, 80, flagSYN, ts, 0)),
		edgePacket(6, tcpHeader(t, 80, 81, flagSYN|flagACK, ts, 0)),
		edgePacket(6, tcpHeader(t, 80, 80, flagSYN, []byte{2, 4, 5, 0xb4}, 0)),
		edgePacket(6, tcpHeader(t, 80, 80, flagSYN, nil, 4)),
	)
	// Short transport headers.
	for _, n := range []int{0, 1, 2, 3, 4, 13, 14, 19, 20} {
		ps = append(ps, tcpPrefix(t, n, 80, 80), tcpPrefix(t, n, 80, 81), tcpPrefix(t, n, 0, 20))
	}
	for _, n := range []int{0, 2, 4, 7, 8} {
		ps = append(ps, udpPrefix(t, n, 80, 80), udpPrefix(t, n, 80, 81))
	}
	// Short headers behind IP options: the transport offset is IHL*4.
	opt := tcpPrefix(t, 4, 80, 80)
	opt.Options = []byte{1, 1, 1, 1}
	ps = append(ps, opt)
	// Non-first fragments with header-like data.
	for _, off := range []uint16{1, 2, 100} {
		ps = append(ps, tcpFragment(t, off, false), tcpFragment(t, off, true), udpFragment(t, off))
	}
	// First fragments.
	first := tcpPrefix(t, 20, 80, 80)
	first.MF = true
	ps = append(ps, first)
	// Other protocols, for "! -p tcp -m tcp" and "! -p udp -m udp":
	// bytes 0..3 read as ports 80 -> 80.
	ps = append(ps, edgePacket(47, []byte{0, 80, 0, 80, 0, 0, 0, 0}), edgePacket(47, []byte{0, 80}))
	icmp, err := ICMPMessage(8, 0, 80, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	ps = append(ps, edgePacket(1, icmp))
	return ps
}

var ruleCounterRe = regexp.MustCompile(`(?m)^\[(\d+):\d+\] -A FORWARD (.*)$`)
var policyCounterRe = regexp.MustCompile(`(?m)^:FORWARD ACCEPT \[(\d+):\d+\]$`)

// check runs f's packet alone through the kernel and compares the rules
// that count it with f.matched, and the policy counter with f.dropped.
func (f edgeFact) check(t *testing.T, topo *Topology, bin, work string, c *Case) {
	t.Helper()
	one := &Case{Seed: c.Seed, Rules: c.Rules, Packets: []Packet{f.packet(t)}}
	res, err := RunCase(topo, one, bin, work)
	if err != nil {
		t.Fatalf("%s: %v", f.what, err)
	}
	defer os.RemoveAll(res.Dir)
	counted := map[string]bool{}
	for _, m := range ruleCounterRe.FindAllStringSubmatch(res.Kernel, -1) {
		// Several rules may print alike (vanished matches print as plain
		// "-p tcp"): a line counts when any of its rules did.
		counted[m[2]] = counted[m[2]] || m[1] != "0"
	}
	for _, r := range f.matched {
		if !counted[r] {
			t.Errorf("%s (%s): the kernel does not count it in %q", f.what, one.Packets[0].String(), r)
		}
	}
	for _, r := range f.unmatched {
		if on, ok := counted[r]; !ok || on {
			t.Errorf("%s (%s): the kernel counts it in %q (or has no such rule)", f.what, one.Packets[0].String(), r)
		}
	}
	m := policyCounterRe.FindStringSubmatch(res.Kernel)
	if m == nil {
		t.Fatalf("no FORWARD policy line in:\n%s", res.Kernel)
	}
	if n, _ := strconv.Atoi(m[1]); (n == 0) != f.dropped {
		t.Errorf("%s (%s): policy counted %d, want dropped=%v", f.what, one.Packets[0].String(), n, f.dropped)
	}
	if len(res.Diff) > 0 {
		t.Errorf("%s (%s): qtables differs from the kernel:\n%s", f.what, one.Packets[0].String(), res.Report())
	}
}
