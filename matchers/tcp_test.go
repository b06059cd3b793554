package matchers

import (
	"cmp"
	"strings"
	"testing"

	"github.com/qtables/qtables/packet"
)

// buildMode is how iptables-nft 1.8.9 puts a tcp or udp instance into the
// kernel (see tcp.go).
type buildMode uint8

const (
	modeNative buildMode = iota // payload expressions
	modeCompat                  // the xt module
	modeGone                    // nothing emitted: Build returns nil
)

func (m buildMode) String() string { return [...]string{"native", "compat", "gone"}[m] }

// portForm is one tcp or udp instance with the mode it must be built in
// and what the installed iptables 1.8.9 (nf_tables) prints for it: save is
// iptables-save's text after "-m NAME" ("" for a gone match, whose rule
// prints no "-m NAME"), listN and list the text `iptables -L -n` and
// `iptables -L` print after the destination column. checkLive compares
// every form with the installed iptables.
type portForm struct {
	proto string // -p of the rule: "tcp", "udp", "!tcp", "!udp"
	opts  string // options after "-m NAME"
	mode  buildMode
	save  string
	listN string
	list  string // "" = same as listN
}

// formRule is the Rule a -p value gives.
func formRule(proto string) Rule {
	p, inv := strings.CutPrefix(proto, "!")
	r := Rule{Table: "filter", Chain: "INPUT", InvProto: inv}
	switch p {
	case "tcp":
		r.Proto = packet.ProtoTCP
	case "udp":
		r.Proto = packet.ProtoUDP
	case "icmp":
		r.Proto = packet.ProtoICMP
	}
	return r
}

// runPortForms checks the mode, Save and List of each form, then the forms
// against the installed iptables.
func runPortForms(t *testing.T, name string, forms []portForm) {
	t.Helper()
	var live []liveRule
	for _, f := range forms {
		lr := liveRule{proto: f.proto, ext: append([]string{"-m", name}, splitArgs(f.opts)...), listN: f.listN, list: f.list}
		if f.mode != modeGone {
			lr.save = " -m " + name + f.save
		}
		live = append(live, lr)
		m, err := buildMatch(name, formRule(f.proto), splitArgs(f.opts)...)
		if err != nil {
			t.Errorf("-p %s -m %s %s: %v", f.proto, name, f.opts, err)
			continue
		}
		if got := modeOf(m); got != f.mode {
			t.Errorf("-p %s -m %s %s: built %v, iptables-nft 1.8.9 makes it %v", f.proto, name, f.opts, got, f.mode)
			continue
		}
		if m == nil {
			if f.save != "" || f.listN != "" || f.list != "" {
				t.Errorf("-m %s %s: a gone match prints nothing; the vector expects output", name, f.opts)
			}
			continue
		}
		if got := saveOf(m); got != f.save {
			t.Errorf("-m %s %s: Save = %q, iptables-save prints %q", name, f.opts, got, f.save)
		}
		if got := listOf(m, true); got != f.listN {
			t.Errorf("-m %s %s: List(-n) = %q, iptables -L -n prints %q", name, f.opts, got, f.listN)
		}
		if got, want := listOf(m, false), cmp.Or(f.list, f.listN); got != want {
			t.Errorf("-m %s %s: List = %q, iptables -L prints %q", name, f.opts, got, want)
		}
	}
	checkLive(t, live)
}

func modeOf(m Match) buildMode {
	switch m := m.(type) {
	case nil:
		return modeGone
	case *tcpMatch:
		if m.native {
			return modeNative
		}
	case *udpMatch:
		if m.native {
			return modeNative
		}
	}
	return modeCompat
}

// tcpForms holds every form the task and spec §5.1 name, as the installed
// iptables 1.8.9 prints it (measured in a network namespace, re-checked by
// checkLive on every run that can).
var tcpForms = []portForm{
	// One destination port side, each shape of range.
	{"tcp", "--dport 80", modeNative, " --dport 80", " tcp dpt:80", " tcp dpt:http"},
	{"tcp", "! --dport 80", modeNative, " ! --dport 80", " tcp dpt:!80", " tcp dpt:!http"},
	{"tcp", "--dport 10:20", modeNative, " --dport 10:20", " tcp dpts:10:20", " tcp dpts:10:ftp-data"},
	{"tcp", "! --dport 10:20", modeNative, " ! --dport 10:20", " tcp dpts:!10:20", " tcp dpts:!10:ftp-data"},
	{"tcp", "--dport 0:20", modeNative, " --dport 0:20", " tcp dpts:0:20", " tcp dpts:0:ftp-data"},
	// Emitted as "dport > 20", read back as a plain range.
	{"tcp", "! --dport 0:20", modeNative, " --dport 21:65535", " tcp dpts:21:65535", " tcp dpts:ftp:65535"},
	{"tcp", "! --dport 0:1", modeNative, " --dport 2:65535", " tcp dpts:2:65535", ""},
	{"tcp", "! --dport 0:65534", modeNative, " --dport 65535", " tcp dpt:65535", ""},
	{"tcp", "--dport 0:65534", modeNative, " --dport 0:65534", " tcp dpts:0:65534", ""},
	{"tcp", "--dport 20:65535", modeNative, " --dport 20:65535", " tcp dpts:20:65535", " tcp dpts:ftp-data:65535"},
	{"tcp", "! --dport 20:65535", modeNative, " ! --dport 20:65535", " tcp dpts:!20:65535", " tcp dpts:!ftp-data:65535"},
	{"tcp", "! --dport 1:65535", modeNative, " ! --dport 1:65535", " tcp dpts:!1:65535", " tcp dpts:!tcpmux:65535"},
	{"tcp", "--dport 0", modeNative, " --dport 0", " tcp dpt:0", ""},
	{"tcp", "! --dport 0", modeNative, " ! --dport 0", " tcp dpt:!0", ""},
	{"tcp", "--dport 65535", modeNative, " --dport 65535", " tcp dpt:65535", ""},
	{"tcp", "! --dport 65535", modeNative, " ! --dport 65535", " tcp dpt:!65535", ""},
	{"tcp", "--dport 65535:65535", modeNative, " --dport 65535", " tcp dpt:65535", ""},
	{"tcp", "--dport 0:0", modeNative, " --dport 0", " tcp dpt:0", ""},
	{"tcp", "! --dport 0:0", modeNative, " ! --dport 0", " tcp dpt:!0", ""},
	{"tcp", "--dport 1", modeNative, " --dport 1", " tcp dpt:1", " tcp dpt:tcpmux"},
	// A full range constrains nothing: alone it is "all zero" (compat);
	// inverted it is native and emits nothing, so the match is gone.
	{"tcp", "--dport 0:65535", modeCompat, "", " tcp", ""},
	{"tcp", "--dport :", modeCompat, "", " tcp", ""},
	{"tcp", "! --dport 0:65535", modeGone, "", "", ""},
	{"tcp", "! --dport :", modeGone, "", "", ""},
	// The same for the source port.
	{"tcp", "--sport 80", modeNative, " --sport 80", " tcp spt:80", " tcp spt:http"},
	{"tcp", "! --sport 80", modeNative, " ! --sport 80", " tcp spt:!80", " tcp spt:!http"},
	{"tcp", "--sport 10:20", modeNative, " --sport 10:20", " tcp spts:10:20", " tcp spts:10:ftp-data"},
	{"tcp", "! --sport 10:20", modeNative, " ! --sport 10:20", " tcp spts:!10:20", " tcp spts:!10:ftp-data"},
	{"tcp", "--sport 0:20", modeNative, " --sport 0:20", " tcp spts:0:20", " tcp spts:0:ftp-data"},
	{"tcp", "! --sport 0:20", modeNative, " --sport 21:65535", " tcp spts:21:65535", " tcp spts:ftp:65535"},
	{"tcp", "! --sport 0:65534", modeNative, " --sport 65535", " tcp spt:65535", ""},
	{"tcp", "--sport 20:65535", modeNative, " --sport 20:65535", " tcp spts:20:65535", " tcp spts:ftp-data:65535"},
	{"tcp", "! --sport 20:65535", modeNative, " ! --sport 20:65535", " tcp spts:!20:65535", " tcp spts:!ftp-data:65535"},
	{"tcp", "--sport 0", modeNative, " --sport 0", " tcp spt:0", ""},
	{"tcp", "! --sport 0", modeNative, " ! --sport 0", " tcp spt:!0", ""},
	{"tcp", "--sport 65535", modeNative, " --sport 65535", " tcp spt:65535", ""},
	{"tcp", "--sport 0:0", modeNative, " --sport 0", " tcp spt:0", ""},
	{"tcp", "--sport 1024:", modeNative, " --sport 1024:65535", " tcp spts:1024:65535", ""},
	{"tcp", "--sport :4", modeNative, " --sport 0:4", " tcp spts:0:4", ""},
	{"tcp", "--sport 4:4", modeNative, " --sport 4", " tcp spt:4", ""},
	{"tcp", "--sport :", modeCompat, "", " tcp", ""},
	{"tcp", "! --sport :", modeGone, "", "", ""},
	{"tcp", "! --sport 0:65535", modeGone, "", "", ""},
	// Both sides. Two single non-zero ports of one inversion become one
	// 32-bit comparison (see portSpec.pair); the print is the same.
	{"tcp", "--sport 22 --dport 80", modeNative, " --sport 22 --dport 80", " tcp spt:22 dpt:80", " tcp spt:ssh dpt:http"},
	{"tcp", "! --sport 22 ! --dport 80", modeNative, " ! --sport 22 ! --dport 80", " tcp spt:!22 dpt:!80", " tcp spt:!ssh dpt:!http"},
	{"tcp", "! --sport 22 --dport 80", modeNative, " ! --sport 22 --dport 80", " tcp spt:!22 dpt:80", " tcp spt:!ssh dpt:http"},
	{"tcp", "--sport 0 --dport 80", modeNative, " --sport 0 --dport 80", " tcp spt:0 dpt:80", " tcp spt:0 dpt:http"},
	{"tcp", "! --sport 0 ! --dport 80", modeNative, " ! --sport 0 ! --dport 80", " tcp spt:!0 dpt:!80", " tcp spt:!0 dpt:!http"},
	{"tcp", "! --sport 0:20 ! --dport 0:30", modeNative, " --sport 21:65535 --dport 31:65535",
		" tcp spts:21:65535 dpts:31:65535", " tcp spts:ftp:65535 dpts:31:65535"},
	{"tcp", "--sport 10:20 ! --dport 80", modeNative, " --sport 10:20 ! --dport 80", " tcp spts:10:20 dpt:!80", " tcp spts:10:ftp-data dpt:!http"},
	{"tcp", "! --sport : --dport 80", modeNative, " --dport 80", " tcp dpt:80", " tcp dpt:http"},
	{"tcp", "--source-port ssh --destination-port http", modeNative, " --sport 22 --dport 80", " tcp spt:22 dpt:80", " tcp spt:ssh dpt:http"},
	// Port spellings (xtables_parse_port: strtoul base 0, tcp services).
	{"tcp", "--sport 0x50", modeNative, " --sport 80", " tcp spt:80", " tcp spt:http"},
	{"tcp", "--sport 010", modeNative, " --sport 8", " tcp spt:8", ""},
	{"tcp", "--sport +80", modeNative, " --sport 80", " tcp spt:80", " tcp spt:http"},
	{"tcp", "--sport smtp", modeNative, " --sport 25", " tcp spt:25", " tcp spt:smtp"},
	{"tcp", "--dport 25:smtp", modeNative, " --dport 25", " tcp dpt:25", " tcp dpt:smtp"},
	// Flags. A zero mask emits nothing; with a zero comparison and no
	// inversion the whole match is all zero (compat) instead.
	{"tcp", "--tcp-flags SYN SYN", modeNative, " --tcp-flags SYN SYN", " tcp flags:0x02/0x02", " tcp flags:SYN/SYN"},
	{"tcp", "! --tcp-flags SYN SYN", modeNative, " ! --tcp-flags SYN SYN", " tcp flags:!0x02/0x02", " tcp flags:!SYN/SYN"},
	{"tcp", "--tcp-flags SYN,ACK ACK", modeNative, " --tcp-flags SYN,ACK ACK", " tcp flags:0x12/0x10", " tcp flags:SYN,ACK/ACK"},
	{"tcp", "--tcp-flags syn,ack ack", modeNative, " --tcp-flags SYN,ACK ACK", " tcp flags:0x12/0x10", " tcp flags:SYN,ACK/ACK"},
	{"tcp", "--tcp-flags SYN,,ACK SYN", modeNative, " --tcp-flags SYN,ACK SYN", " tcp flags:0x12/0x02", " tcp flags:SYN,ACK/SYN"},
	{"tcp", `--tcp-flags SYN ""`, modeNative, " --tcp-flags SYN NONE", " tcp flags:0x02/0x00", " tcp flags:SYN/NONE"},
	{"tcp", "--tcp-flags SYN SYN,ACK", modeNative, " --tcp-flags SYN SYN,ACK", " tcp flags:0x02/0x12", " tcp flags:SYN/SYN,ACK"},
	{"tcp", "--tcp-flags ALL NONE", modeNative, " --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE",
		" tcp flags:0x3F/0x00", " tcp flags:FIN,SYN,RST,PSH,ACK,URG/NONE"},
	{"tcp", "--tcp-flags ALL ALL", modeNative, " --tcp-flags FIN,SYN,RST,PSH,ACK,URG FIN,SYN,RST,PSH,ACK,URG",
		" tcp flags:0x3F/0x3F", " tcp flags:FIN,SYN,RST,PSH,ACK,URG/FIN,SYN,RST,PSH,ACK,URG"},
	{"tcp", "--tcp-flags NONE SYN", modeGone, "", "", ""},
	{"tcp", "! --tcp-flags NONE SYN", modeGone, "", "", ""},
	{"tcp", "! --tcp-flags NONE NONE", modeGone, "", "", ""},
	{"tcp", "--tcp-flags NONE NONE", modeCompat, "", " tcp", ""},
	{"tcp", "--tcp-flags NONE SYN --dport 80", modeNative, " --dport 80", " tcp dpt:80", " tcp dpt:http"},
	{"tcp", "--syn", modeNative, " --tcp-flags FIN,SYN,RST,ACK SYN", " tcp flags:0x17/0x02", " tcp flags:FIN,SYN,RST,ACK/SYN"},
	{"tcp", "! --syn", modeNative, " ! --tcp-flags FIN,SYN,RST,ACK SYN", " tcp flags:!0x17/0x02", " tcp flags:!FIN,SYN,RST,ACK/SYN"},
	{"tcp", "--syn --dport 80", modeNative, " --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN",
		" tcp dpt:80 flags:0x17/0x02", " tcp dpt:http flags:FIN,SYN,RST,ACK/SYN"},
	{"tcp", "! --syn ! --dport 0:20", modeNative, " --dport 21:65535 ! --tcp-flags FIN,SYN,RST,ACK SYN",
		" tcp dpts:21:65535 flags:!0x17/0x02", " tcp dpts:ftp:65535 flags:!FIN,SYN,RST,ACK/SYN"},
	// No option at all: compat.
	{"tcp", "", modeCompat, "", " tcp", ""},
	// --tcp-option: compat, printed by tcp_save/tcp_print from what was
	// given (an inverted full range and a zero mask are not saved; -L
	// still shows the range).
	{"tcp", "--tcp-option 8", modeCompat, " --tcp-option 8", " tcp option=8", ""},
	{"tcp", "! --tcp-option 8", modeCompat, " ! --tcp-option 8", " tcp option=!8", ""},
	{"tcp", "--tcp-option 0x10", modeCompat, " --tcp-option 16", " tcp option=16", ""},
	{"tcp", "--tcp-option 255", modeCompat, " --tcp-option 255", " tcp option=255", ""},
	{"tcp", "--tcp-option 8 ! --dport :", modeCompat, " --tcp-option 8", " tcp dpts:!0:65535 option=8", ""},
	{"tcp", "--tcp-option 8 ! --dport 0:20", modeCompat, " ! --dport 0:20 --tcp-option 8",
		" tcp dpts:!0:20 option=8", " tcp dpts:!0:ftp-data option=8"},
	{"tcp", "--tcp-option 8 --dport 80 --syn", modeCompat, " --dport 80 --tcp-option 8 --tcp-flags FIN,SYN,RST,ACK SYN",
		" tcp dpt:80 option=8 flags:0x17/0x02", " tcp dpt:http option=8 flags:FIN,SYN,RST,ACK/SYN"},
	{"tcp", "--tcp-option 8 --tcp-flags NONE SYN", modeCompat, " --tcp-option 8", " tcp option=8", ""},
	{"tcp", "--tcp-option 8 ! --tcp-flags NONE NONE", modeCompat, " --tcp-option 8 ! --tcp-flags NONE NONE",
		" tcp option=8 flags:!0x00/0x00", " tcp option=8 flags:!NONE/NONE"},
	{"tcp", "! --tcp-option 8 ! --sport 22 ! --dport 80", modeCompat, " ! --sport 22 ! --dport 80 ! --tcp-option 8",
		" tcp spt:!22 dpt:!80 option=!8", " tcp spt:!ssh dpt:!http option=!8"},
	{"tcp", "--sport 22 --dport 80 --tcp-flags ALL NONE --tcp-option 8", modeCompat,
		" --sport 22 --dport 80 --tcp-option 8 --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE",
		" tcp spt:22 dpt:80 option=8 flags:0x3F/0x00", " tcp spt:ssh dpt:http option=8 flags:FIN,SYN,RST,PSH,ACK,URG/NONE"},
	// After "! -p tcp" only native matches reach the kernel's approval.
	{"!tcp", "--dport 1", modeNative, " --dport 1", " tcp dpt:1", " tcp dpt:tcpmux"},
	{"!tcp", "--syn", modeNative, " --tcp-flags FIN,SYN,RST,ACK SYN", " tcp flags:0x17/0x02", " tcp flags:FIN,SYN,RST,ACK/SYN"},
	{"!tcp", "! --dport 0:20", modeNative, " --dport 21:65535", " tcp dpts:21:65535", " tcp dpts:ftp:65535"},
	{"!tcp", "! --dport :", modeGone, "", "", ""},
}

var tcpErr = []errVector{
	{proto: "tcp", opts: "--sport 4:3", err: "invalid portrange (min > max)"},
	{proto: "tcp", opts: "--sport 65536", err: `invalid port/service "65536"`},
	{proto: "tcp", opts: "--sport -1", err: `invalid port/service "-1"`},
	{proto: "tcp", opts: "--sport 80:80:90", err: `invalid port/service "80:90"`},
	{proto: "tcp", opts: "--sport foo", err: `invalid port/service "foo"`},
	{proto: "tcp", opts: `--sport ""`, err: "invalid port/service"},
	{proto: "tcp", opts: "--sport 0x", err: "invalid port/service"},
	{proto: "", opts: "--dport 1", err: "requires '-p tcp'"},
	{proto: "udp", opts: "--dport 1", err: "requires '-p tcp'"},
	// The kernel refuses the xt tcp match after "! -p tcp".
	{proto: "!tcp", opts: "", err: "cannot be used with '! -p tcp'"},
	{proto: "!tcp", opts: "--sport :", err: "cannot be used with '! -p tcp'"},
	{proto: "!tcp", opts: "--tcp-flags NONE NONE", err: "cannot be used with '! -p tcp'"},
	{proto: "!tcp", opts: "--dport 1 --tcp-option 2", err: "cannot be used with '! -p tcp'"},
	{proto: "tcp", opts: "--tcp-flags SYN,FOO SYN", err: `unknown TCP flag "FOO"`},
	{proto: "tcp", opts: "--tcp-flags SYN,ACK,CWR SYN", err: `unknown TCP flag "CWR"`},
	// Flag names fold ASCII case only (strcasecmp): "ſ" is not "s".
	{proto: "tcp", opts: "--tcp-flags ſYN SYN", err: `unknown TCP flag "ſYN"`},
	{proto: "tcp", opts: "--tcp-flags SYN !ACK", err: "requires two args"},
	{proto: "tcp", opts: "--tcp-flags SYN -ACK", err: "requires two args"},
	{proto: "tcp", opts: "--syn --tcp-flags SYN SYN", err: "only one of --syn or --tcp-flags"},
	{proto: "tcp", opts: "--tcp-flags SYN SYN --syn", err: "only one of --syn or --tcp-flags"},
	{proto: "tcp", opts: "--tcp-option 0", err: "invalid TCP option"},
	{proto: "tcp", opts: "--tcp-option 256", err: "invalid TCP option"},
	{proto: "tcp", opts: "--sport 1 --source-port 2", err: "only one --sport"},
}

func TestTCPFormats(t *testing.T) {
	if _, ok := lookupService("ssh", "tcp"); !ok {
		t.Skip("/etc/services lacks ssh/tcp; names in List cannot be checked")
	}
	runPortForms(t, "tcp", tcpForms)
}

func TestTCPErrors(t *testing.T) { runErrVectors(t, "tcp", tcpErr) }

func TestTCPBuildIsRepeatable(t *testing.T) {
	// The engine builds one match per address pair from one builder.
	ext, _ := LookupMatch("tcp")
	for _, opts := range []string{"--dport 22", "! --dport 0:21", "--tcp-option 2 --dport 22"} {
		b := ext.New()
		if err := parseOptions(ext.Options, splitArgs(opts), b.Parse); err != nil {
			t.Fatal(err)
		}
		m1, err1 := b.Build(&ruleTCP)
		m2, err2 := b.Build(&ruleTCP)
		if err1 != nil || err2 != nil || modeOf(m1) != modeOf(m2) || saveOf(m1) != saveOf(m2) {
			t.Errorf("%s: Build twice: %v %v %v %v %q %q", opts, err1, err2, modeOf(m1), modeOf(m2), saveOf(m1), saveOf(m2))
		}
	}
}

func tcpPkt(sport, dport uint16, flags uint8, opts ...byte) pkt {
	return pkt{proto: packet.ProtoTCP, l4: tcpHdr(sport, dport, flags, opts...)}
}

func TestTCPMatchPorts(t *testing.T) {
	m := mustBuild(t, "tcp", ruleTCP, "--sport 1024: --dport 22")
	runMatchCases(t, m, []matchCase{
		{"hit", tcpPkt(40000, 22, packet.TCPSyn), true, false},
		{"hit range start", tcpPkt(1024, 22, 0), true, false},
		{"sport below range", tcpPkt(1023, 22, 0), false, false},
		{"dport differs", tcpPkt(40000, 23, 0), false, false},
	})
	inv := mustBuild(t, "tcp", ruleTCP, "! --dport 20:25")
	runMatchCases(t, inv, []matchCase{
		{"outside inverted range", tcpPkt(1, 80, 0), true, false},
		{"inside inverted range", tcpPkt(1, 22, 0), false, false},
		{"edge", tcpPkt(1, 25, 0), false, false},
	})
	// "! 0:N" becomes "N+1:65535": the same ports.
	low := mustBuild(t, "tcp", ruleTCP, "! --dport 0:20")
	runMatchCases(t, low, []matchCase{
		{"0", tcpPkt(1, 0, 0), false, false},
		{"20", tcpPkt(1, 20, 0), false, false},
		{"21", tcpPkt(1, 21, 0), true, false},
		{"65535", tcpPkt(1, 65535, 0), true, false},
	})
}

// TestTCPInvertedPortPair pins iptables-nft 1.8.9's single 32-bit
// comparison of two inverted single ports: the rule fails only when both
// ports are equal, unlike the xt match, which fails when either is.
func TestTCPInvertedPortPair(t *testing.T) {
	pair := mustBuild(t, "tcp", ruleTCP, "! --sport 22 ! --dport 80")
	short := tcpPkt(1, 2, 0)
	short.l4 = short.l4[:3]
	runMatchCases(t, pair, []matchCase{
		{"both equal", tcpPkt(22, 80, 0), false, false},
		{"sport equal", tcpPkt(22, 81, 0), true, false},
		{"dport equal", tcpPkt(23, 80, 0), true, false},
		{"neither", tcpPkt(1, 2, 0), true, false},
		{"3 bytes", short, false, false},
	})
	// Port 0 is never paired: two comparisons, each inverted.
	zero := mustBuild(t, "tcp", ruleTCP, "! --sport 0 ! --dport 80")
	runMatchCases(t, zero, []matchCase{
		{"sport 0", tcpPkt(0, 81, 0), false, false},
		{"dport 80", tcpPkt(5, 80, 0), false, false},
		{"neither", tcpPkt(5, 81, 0), true, false},
	})
	// Mixed inversion is never paired either.
	mixed := mustBuild(t, "tcp", ruleTCP, "! --sport 22 --dport 80")
	runMatchCases(t, mixed, []matchCase{
		{"sport 22", tcpPkt(22, 80, 0), false, false},
		{"sport 23", tcpPkt(23, 80, 0), true, false},
		{"dport 81", tcpPkt(23, 81, 0), false, false},
	})
	// The xt match (with --tcp-option) keeps the per-port inversion.
	xt := mustBuild(t, "tcp", ruleTCP, "! --sport 22 ! --dport 80 ! --tcp-option 99")
	runMatchCases(t, xt, []matchCase{
		{"sport equal", tcpPkt(22, 81, 0), false, false},
		{"neither", tcpPkt(1, 2, 0), true, false},
	})
}

func TestTCPMatchReadsHeaderBytes(t *testing.T) {
	// The ports come from the header bytes, not the View's convenience
	// fields (which a caller may leave unset).
	m := mustBuild(t, "tcp", ruleTCP, "--dport 443")
	p := tcpPkt(1, 443, 0).view()
	p.DstPort, p.HasPorts = 80, true
	if !m.Match(ctxFor(p)) {
		t.Fatal("dport 443 in the header did not match")
	}
}

func TestTCPMatchFlags(t *testing.T) {
	syn := mustBuild(t, "tcp", ruleTCP, "--syn")
	notSyn := mustBuild(t, "tcp", ruleTCP, "! --syn")
	cases := []struct {
		name  string
		flags uint8
		isSyn bool
	}{
		{"SYN", packet.TCPSyn, true},
		{"SYN+ECE+CWR", packet.TCPSyn | packet.TCPEce | packet.TCPCwr, true}, // not in the mask
		{"SYN+PSH", packet.TCPSyn | packet.TCPPsh, true},                     // PSH not in --syn's mask
		{"SYN+ACK", packet.TCPSyn | packet.TCPAck, false},
		{"SYN+RST", packet.TCPSyn | packet.TCPRst, false},
		{"SYN+FIN", packet.TCPSyn | packet.TCPFin, false},
		{"ACK", packet.TCPAck, false},
		{"none", 0, false},
	}
	for _, tc := range cases {
		if got := syn.Match(ctxFor(tcpPkt(1, 2, tc.flags).view())); got != tc.isSyn {
			t.Errorf("--syn on %s = %v", tc.name, got)
		}
		if got := notSyn.Match(ctxFor(tcpPkt(1, 2, tc.flags).view())); got == tc.isSyn {
			t.Errorf("! --syn on %s = %v", tc.name, got)
		}
	}
	xmas := mustBuild(t, "tcp", ruleTCP, "--tcp-flags ALL FIN,PSH,URG")
	runMatchCases(t, xmas, []matchCase{
		{"xmas", tcpPkt(1, 2, packet.TCPFin|packet.TCPPsh|packet.TCPUrg), true, false},
		{"xmas+ack", tcpPkt(1, 2, packet.TCPFin|packet.TCPPsh|packet.TCPUrg|packet.TCPAck), false, false},
	})
	// A comparison with bits outside the mask never matches (both modes).
	for _, opts := range []string{"--tcp-flags SYN SYN,ACK", "--tcp-flags SYN SYN,ACK --tcp-option 99"} {
		runMatchCases(t, mustBuild(t, "tcp", ruleTCP, opts), []matchCase{
			{opts + " on SYN+ACK", tcpPkt(1, 2, packet.TCPSyn|packet.TCPAck), false, false},
		})
	}
	// In the xt match a zero mask inverted never matches; native, it
	// emits nothing and the match is gone (runPortForms checks Build).
	never := mustBuild(t, "tcp", ruleTCP, "! --tcp-flags NONE NONE --tcp-option 99")
	runMatchCases(t, never, []matchCase{{"xt inverted empty mask", tcpPkt(1, 2, packet.TCPSyn), false, false}})
}

func TestTCPMatchOption(t *testing.T) {
	const mss, sack, ts = 2, 4, 8
	m := mustBuild(t, "tcp", ruleTCP, "--tcp-option 8")
	inv := mustBuild(t, "tcp", ruleTCP, "! --tcp-option 8")
	synOpts := []byte{mss, 4, 0x05, 0xb4, sack, 2, ts, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}
	cases := []struct {
		name      string
		p         pkt
		has, drop bool
	}{
		{"SYN options with timestamp", tcpPkt(1, 2, packet.TCPSyn, synOpts...), true, false},
		{"no options", tcpPkt(1, 2, 0), false, false},
		{"MSS only", tcpPkt(1, 2, 0, mss, 4, 5, 0xb4), false, false},
		{"NOPs then TS", tcpPkt(1, 2, 0, 1, 1, ts, 10, 0, 0, 0, 0, 0, 0, 0, 0), true, false},
		// Kind 0 (end of list) does not stop the kernel's walk.
		{"TS after EOL", tcpPkt(1, 2, 0, 0, ts, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0), true, false},
		// A zero length byte advances by one, landing on the 8.
		{"zero length", tcpPkt(1, 2, 0, 30, 0, ts, 2), true, false},
		// The 8 here is a length byte, skipped over.
		{"8 as a length", tcpPkt(1, 2, 0, 30, 8, 0, 0, 0, 0, 0, 0), false, false},
	}
	for _, tc := range cases {
		c := ctxFor(tc.p.view())
		if got := m.Match(c); got != tc.has || c.Hotdrop {
			t.Errorf("--tcp-option 8 on %s = %v hotdrop %v", tc.name, got, c.Hotdrop)
		}
		c = ctxFor(tc.p.view())
		if got := inv.Match(c); got == tc.has || c.Hotdrop {
			t.Errorf("! --tcp-option 8 on %s = %v hotdrop %v", tc.name, got, c.Hotdrop)
		}
	}

	// Data offset below 5 words, or options cut off: hotdrop, even inverted.
	bad := tcpPkt(1, 2, 0)
	bad.l4[12] = 4 << 4
	short := tcpPkt(1, 2, 0, ts, 10, 0, 0, 0, 0, 0, 0, 0, 0)
	short.l4 = short.l4[:26]
	for _, p := range []pkt{bad, short} {
		for _, mm := range []Match{m, inv} {
			c := ctxFor(p.view())
			if mm.Match(c) || !c.Hotdrop {
				t.Errorf("%q on a broken option area: want hotdrop", saveOf(mm))
			}
		}
	}
	// Without an option test, a bad data offset is not looked at.
	plain := mustBuild(t, "tcp", ruleTCP, "--dport 2")
	if c := ctxFor(bad.view()); !plain.Match(c) || c.Hotdrop {
		t.Error("--dport 2 with data offset 4: want match without hotdrop")
	}
}

// tcpBytes returns a packet whose transport part is the first n bytes of
// a TCP header with the given ports and SYN set (n may exceed 20: zero
// payload follows).
func tcpBytes(sport, dport uint16, n int) pkt {
	h := append(tcpHdr(sport, dport, packet.TCPSyn), make([]byte, max(0, n-20))...)
	return pkt{proto: packet.ProtoTCP, l4: h[:n]}
}

// tcpFrag returns a non-first fragment (offset off) whose data bytes look
// like a TCP header with the given ports and SYN set.
func tcpFrag(off uint16, sport, dport uint16) pkt {
	p := tcpBytes(sport, dport, 24)
	p.fragWord = off
	return p
}

// TestTCPNativeFragmentsAndShortHeaders pins what the lead measured on the
// kernel for iptables-nft's payload expressions (conformance's
// TestKernelEdgeCases keeps checking it): fragments are read as headers,
// missing bytes fail the field that needs them, nothing is hot-dropped.
func TestTCPNativeFragmentsAndShortHeaders(t *testing.T) {
	cases := []struct {
		opts string
		p    pkt
		want bool
	}{
		{"--sport 80", tcpFrag(1, 80, 80), true},
		{"--dport 80", tcpFrag(1, 80, 80), true},
		{"--dport 80", tcpFrag(2, 80, 80), true},
		{"--dport 80", tcpFrag(packet.IPv4MF|2, 80, 80), true},
		{"--tcp-flags SYN SYN", tcpFrag(1, 80, 80), true},
		{"--tcp-flags SYN SYN", tcpFrag(2, 80, 80), true},
		{"! --dport 22", tcpFrag(1, 80, 80), true},
		{"--dport 22", tcpFrag(2, 80, 80), false},
		{"--sport 80", tcpBytes(80, 80, 2), true},
		{"--dport 80", tcpBytes(80, 80, 2), false},
		{"! --dport 80", tcpBytes(80, 81, 2), false},
		{"! --dport 0:20", tcpBytes(80, 81, 2), false},
		{"--sport 80 --dport 80", tcpBytes(80, 80, 2), false}, // one 4-byte load
		{"--sport 80", tcpBytes(80, 80, 1), false},
		{"--dport 80", tcpBytes(80, 80, 4), true},
		{"--sport 80 --dport 80", tcpBytes(80, 80, 4), true},
		{"--tcp-flags SYN SYN", tcpBytes(80, 80, 13), false},
		{"! --tcp-flags SYN SYN", tcpBytes(80, 80, 13), false},
		{"--tcp-flags SYN SYN", tcpBytes(80, 80, 14), true},
		{"! --dport 80", tcpBytes(80, 81, 14), true},
		{"--syn --dport 80", tcpBytes(80, 80, 4), false},
		{"--sport 80", tcpBytes(80, 80, 0), false},
		{"! --sport 80", tcpBytes(80, 80, 0), false},
		{"! --syn", tcpBytes(80, 80, 0), false},
	}
	for _, tc := range cases {
		m := mustBuild(t, "tcp", ruleTCP, tc.opts)
		c := ctxFor(tc.p.view())
		if got := m.Match(c); got != tc.want || c.Hotdrop {
			t.Errorf("%s on %d bytes (frag word %#x): Match = %v hotdrop %v, want %v without hotdrop",
				tc.opts, len(tc.p.l4), tc.p.fragWord, got, c.Hotdrop, tc.want)
		}
	}
	// "! -p tcp -m tcp --dport 1" reads any protocol's bytes 2 and 3.
	m := mustBuild(t, "tcp", Rule{Proto: packet.ProtoTCP, InvProto: true}, "--dport 1")
	icmp := pkt{proto: packet.ProtoICMP, l4: []byte{8, 0, 0, 1, 0, 0, 0, 0}}
	if !m.Match(ctxFor(icmp.view())) {
		t.Error("! -p tcp -m tcp --dport 1: ICMP with checksum 0x0001 does not match")
	}
}

// TestTCPCompatFragmentsAndShortHeaders: the xt match (no option, or
// --tcp-option) keeps tcp_mt's checks.
func TestTCPCompatFragmentsAndShortHeaders(t *testing.T) {
	for _, tc := range []struct {
		opts string
		want bool // on a complete header with ports 1 -> 80 and no options
	}{
		{"", true},
		{"--sport :", true},
		{"--tcp-flags NONE NONE", true},
		{"--tcp-option 99", false},
		{"! --tcp-option 99", true},
		{"! --dport 22 ! --tcp-option 99", true},
		{"! --dport 22 --tcp-option 99", false},
	} {
		opts, want := tc.opts, tc.want
		m := mustBuild(t, "tcp", ruleTCP, opts)
		if modeOf(m) != modeCompat {
			t.Fatalf("%q: built %v, want compat", opts, modeOf(m))
		}
		frag := func(word uint16) pkt { p := tcpPkt(1, 80, 0); p.fragWord = word; return p }
		runMatchCases(t, m, []matchCase{
			{opts + ": unfragmented", frag(0), want, false},
			{opts + ": first fragment (MF)", frag(packet.IPv4MF), want, false},
			{opts + ": DF", frag(packet.IPv4DF), want, false},
			{opts + ": offset 1 is an attack", frag(1), false, true},
			{opts + ": offset 1 with MF", frag(packet.IPv4MF | 1), false, true},
			{opts + ": later fragment", frag(2), false, false},
			{opts + ": last fragment", frag(185), false, false},
			{opts + ": 19-byte header", tcpBytes(1, 80, 19), false, true},
			{opts + ": 2-byte header", tcpBytes(1, 80, 2), false, true},
			{opts + ": no header", tcpBytes(1, 80, 0), false, true},
		})
	}
}

func BenchmarkTCPMatch(b *testing.B) {
	opts := []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}
	for _, bc := range []struct{ name, opts string }{
		{"native", "--sport 1024:65535 ! --dport 80:90 --syn"},
		{"compat", "--sport 1024:65535 ! --dport 80:90 --syn --tcp-option 8"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := mustBuild(b, "tcp", ruleTCP, bc.opts)
			c := ctxFor(tcpPkt(40000, 22, packet.TCPSyn, opts...).view())
			if !m.Match(c) {
				b.Fatal("benchmark packet does not match")
			}
			b.ReportAllocs()
			for b.Loop() {
				c.Hotdrop = false
				if !m.Match(c) {
					b.Fatal("miss")
				}
			}
		})
	}
}

func TestTCPMatchDoesNotAllocate(t *testing.T) {
	for _, opts := range []string{"--sport 1024:65535 --syn --tcp-option 8", "--sport 1024:65535 --syn", "! --sport 1 ! --dport 2"} {
		m := mustBuild(t, "tcp", ruleTCP, opts)
		c := ctxFor(tcpPkt(40000, 22, packet.TCPSyn, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0).view())
		if n := testing.AllocsPerRun(100, func() { m.Match(c) }); n != 0 {
			t.Errorf("%s: Match allocates %v times", opts, n)
		}
	}
}
