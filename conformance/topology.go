package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	"github.com/qtables/qtables/internal/netns"
)

// NamespacePrefix starts the name of every namespace the suite creates, so
// a later run can remove what a killed run left behind (see
// netns.CleanStale).
const NamespacePrefix = "qtc"

// Link addresses. The generator never produces addresses in LinkNet, so no
// generated packet is addressed to (or claims to come from) a firewall
// interface.
var (
	LinkNet  = netip.MustParsePrefix("100.64.0.0/24")
	fwB0Addr = netip.MustParsePrefix("100.64.0.2/30") // FW side of SRC<->FW
	fwB1Addr = netip.MustParsePrefix("100.64.0.5/30") // FW side of FW<->SINK
	sinkAddr = netip.MustParsePrefix("100.64.0.6/30") // FW's default gateway
)

// Interface names. The rule generator uses InIface and OutIface (and names
// that never match) in -i/-o.
const (
	InIface  = "b0" // FW's ingress: packets from SRC arrive here
	OutIface = "b1" // FW's egress: the default route points here
	srcIface = "a0"
	sinkDev  = "c1"
)

// IngressMTU is the MTU of the SRC<->FW link. It is larger than EgressMTU
// so that datagrams longer than the egress MTU can be sent: without DF the
// kernel forwards them (FORWARD sees the whole datagram, fragmentation
// happens after it), with DF it drops them before FORWARD.
const (
	IngressMTU = 4000
	EgressMTU  = 1500
)

// Topology is the three-namespace test network:
//
//	SRC (a0) <-> (b0) FW (b1) <-> (c1) SINK
//
// Frames are injected in SRC through an AF_PACKET socket on a0 and forwarded
// by FW, whose filter table holds the rule set under test. SINK drops
// everything in raw PREROUTING so it never answers (no ICMP errors, no ARP
// needed: FW has a permanent neighbour entry for SINK). FW's mangle FORWARD
// chain holds one rule without target that counts every packet entering
// FORWARD; Send waits on it.
type Topology struct {
	Src, FW, Sink *netns.Namespace

	// SrcMAC and FWMAC are the source and destination MACs of injected
	// frames (a0's and b0's addresses).
	SrcMAC, FWMAC net.HardwareAddr

	conn *netns.PacketConn
}

// CheckTools reports what is missing to build a Topology: root, ip,
// iptables-restore, iptables-save, iptables.
func CheckTools() error {
	if err := netns.Check(); err != nil {
		return err
	}
	for _, tool := range []string{"iptables", "iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("conformance: %s is not installed", tool)
		}
	}
	return nil
}

// NewTopology builds the network. On error everything created so far is
// removed; on success the caller must Close it.
func NewTopology() (_ *Topology, err error) {
	t := &Topology{}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if t.Src, err = netns.New(NamespacePrefix, "src"); err != nil {
		return nil, err
	}
	if t.FW, err = netns.New(NamespacePrefix, "fw"); err != nil {
		return nil, err
	}
	if t.Sink, err = netns.New(NamespacePrefix, "sink"); err != nil {
		return nil, err
	}
	if err = netns.AddVeth(t.Src, srcIface, t.FW, InIface); err != nil {
		return nil, err
	}
	if err = netns.AddVeth(t.FW, OutIface, t.Sink, sinkDev); err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return t.Src.SetMTU(srcIface, IngressMTU) },
		func() error { return t.FW.SetMTU(InIface, IngressMTU) },
		func() error { return t.FW.SetMTU(OutIface, EgressMTU) },
		func() error { return t.Sink.SetMTU(sinkDev, EgressMTU) },
		func() error { return t.FW.AddAddr(InIface, fwB0Addr) },
		func() error { return t.FW.AddAddr(OutIface, fwB1Addr) },
		func() error { return t.Sink.AddAddr(sinkDev, sinkAddr) },
		// Forwarding on; reverse-path filtering off everywhere it is
		// consulted (the effective value is the max of "all" and the
		// device's), so packets from arbitrary sources are forwarded.
		func() error { return t.FW.SetSysctl("net.ipv4.ip_forward", "1") },
		func() error { return t.FW.SetSysctl("net.ipv4.conf.all.rp_filter", "0") },
		func() error { return t.FW.SetSysctl("net.ipv4.conf.default.rp_filter", "0") },
		func() error { return t.FW.SetSysctl("net.ipv4.conf."+InIface+".rp_filter", "0") },
		func() error { return t.Src.LinkUp(srcIface) },
		func() error { return t.FW.LinkUp(InIface) },
		func() error { return t.FW.LinkUp(OutIface) },
		func() error { return t.Sink.LinkUp(sinkDev) },
	}
	for _, s := range steps {
		if err = s(); err != nil {
			return nil, err
		}
	}
	sink, err := t.Sink.Link(sinkDev)
	if err != nil {
		return nil, err
	}
	if err = t.FW.AddNeigh(sinkAddr.Addr(), sink.MAC, OutIface); err != nil {
		return nil, err
	}
	if err = t.FW.AddRoute(netip.Prefix{}, sinkAddr.Addr(), OutIface); err != nil {
		return nil, err
	}
	if _, err = t.Sink.Exec([]byte("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -j DROP\nCOMMIT\n"), "iptables-restore"); err != nil {
		return nil, err
	}
	if _, err = t.FW.Exec([]byte(silence), "iptables-restore"); err != nil {
		return nil, err
	}
	if _, err = t.FW.Exec([]byte(instrument), "iptables-restore"); err != nil {
		return nil, err
	}
	src, err := t.Src.Link(srcIface)
	if err != nil {
		return nil, err
	}
	fw, err := t.FW.Link(InIface)
	if err != nil {
		return nil, err
	}
	t.SrcMAC, t.FWMAC = src.MAC, fw.MAC
	if t.conn, err = t.Src.OpenPacket(srcIface); err != nil {
		return nil, err
	}
	return t, nil
}

// instrument is FW's mangle table: one rule without target in FORWARD
// counts every packet that reaches the FORWARD hook (mangle runs before
// filter there, so filter drops do not hide packets from it).
const instrument = "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A FORWARD\nCOMMIT\n"

// silence is FW's raw table: it drops every packet FW itself sends (the
// ICMP errors and TCP resets of REJECT rules) in raw OUTPUT, before the
// filter table's OUTPUT chain, so that chain's policy counter stays zero as
// it does in qtables, which evaluates FORWARD only. The rejected packet
// itself is counted in FORWARD either way.
const silence = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j DROP\nCOMMIT\n"

// Close removes the three namespaces (and with them the links and tables).
// It is idempotent.
func (t *Topology) Close() error {
	var errs []error
	if t.conn != nil {
		errs = append(errs, t.conn.Close())
	}
	for _, n := range []*netns.Namespace{t.Src, t.FW, t.Sink} {
		if n != nil {
			errs = append(errs, n.Close())
		}
	}
	return errors.Join(errs...)
}

// LoadRules replaces FW's filter table with rules (iptables-restore text)
// and zeroes all its counters, policy counters included.
func (t *Topology) LoadRules(rules string) error {
	if _, err := t.FW.Exec([]byte(rules), "iptables-restore"); err != nil {
		return fmt.Errorf("load rule set: %w", err)
	}
	// iptables-restore without -c ignores the [p:b] of policy lines, so
	// zero explicitly: the nf_tables backend may keep base-chain counters
	// across a restore.
	if _, err := t.FW.Exec(nil, "iptables", "-t", "filter", "-Z"); err != nil {
		return fmt.Errorf("zero counters: %w", err)
	}
	return nil
}

// SaveFilter returns `iptables-save -c -t filter` from FW. It reads until
// two consecutive dumps agree (ignoring the timestamp comments), so a
// packet still in flight cannot make the result torn.
func (t *Topology) SaveFilter() (string, error) {
	prev := ""
	for i := 0; i < 10; i++ {
		out, err := t.FW.Exec(nil, "iptables-save", "-c", "-t", "filter")
		if err != nil {
			return "", err
		}
		cur := string(StripComments(out))
		if cur == prev {
			return cur, nil
		}
		prev = cur
	}
	return "", errors.New("iptables-save output did not settle after 10 reads")
}

// ForwardCount returns the packets counted by the mangle FORWARD
// instrument since the topology was built.
func (t *Topology) ForwardCount() (uint64, error) {
	out, err := t.FW.Exec(nil, "iptables-save", "-c", "-t", "mangle")
	if err != nil {
		return 0, err
	}
	m := instrumentRe.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("mangle FORWARD instrument rule not found in:\n%s", out)
	}
	return strconv.ParseUint(string(m[1]), 10, 64)
}

var instrumentRe = regexp.MustCompile(`(?m)^\[(\d+):\d+\] -A FORWARD$`)

// Send writes frames to a0 and waits, until deadline, for the FORWARD
// instrument to count all of them. It returns how many reached FORWARD;
// fewer than len(frames) at the deadline (or more, which means traffic the
// suite did not send) is an error.
func (t *Topology) Send(frames [][]byte, deadline time.Duration) (uint64, error) {
	base, err := t.ForwardCount()
	if err != nil {
		return 0, err
	}
	for i, f := range frames {
		if err := t.conn.WriteFrame(f); err != nil {
			return 0, fmt.Errorf("frame %d: %w", i, err)
		}
	}
	want := base + uint64(len(frames))
	end := time.Now().Add(deadline)
	wait := time.Millisecond
	for {
		n, err := t.ForwardCount()
		if err != nil {
			return 0, err
		}
		if n == want {
			return n - base, nil
		}
		if n > want {
			return n - base, fmt.Errorf("FORWARD counted %d packets, %d sent: unexpected traffic in FW", n-base, len(frames))
		}
		if time.Now().After(end) {
			return n - base, fmt.Errorf("only %d of %d packets reached FORWARD within %v", n-base, len(frames), deadline)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// StripComments removes the lines starting with '#' (iptables-save's
// header and footer) and returns the rest.
func StripComments(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		out.Write(line)
	}
	return out.Bytes()
}
