package matchers

import (
	"testing"
	"time"
)

// conntrackFmt were checked against iptables-save / iptables -L[ -n] 1.8.9.
var conntrackFmt = []fmtVector{
	{opts: "--ctstate DNAT,SNAT,UNTRACKED,ESTABLISHED", save: " --ctstate ESTABLISHED,UNTRACKED,SNAT,DNAT",
		listN: " ctstate ESTABLISHED,UNTRACKED,SNAT,DNAT"},
	{opts: "! --ctstate NEW", save: " ! --ctstate NEW", listN: " ! ctstate NEW"},
	{opts: "--ctstate NEW,INVALID", save: " --ctstate INVALID,NEW", listN: " ctstate INVALID,NEW"},
	{opts: "--ctstate snat,dnat", save: " --ctstate SNAT,DNAT", listN: " ctstate SNAT,DNAT"},
	{opts: "--ctstate U", save: " --ctstate UNTRACKED", listN: " ctstate UNTRACKED"},
	{opts: "--ctstate S", save: " --ctstate SNAT", listN: " ctstate SNAT"},
	{opts: "--ctstate D", save: " --ctstate DNAT", listN: " ctstate DNAT"},
	{opts: "--ctproto tcp", save: " --ctproto 6", listN: " ctproto 6"},
	{opts: "--ctproto TCP", save: " --ctproto 6", listN: " ctproto 6"},
	{opts: "! --ctproto 17", save: " ! --ctproto 17", listN: " ! ctproto 17"},
	{opts: "--ctproto 0", save: " --ctproto 0", listN: " ctproto 0"},
	{opts: "! --ctproto 0", save: " ! --ctproto 0", listN: " ! ctproto 0"},
	{opts: "--ctproto all", save: " --ctproto 0", listN: " ctproto 0"},
	{opts: "--ctproto gre", save: " --ctproto 47", listN: " ctproto 47"},
	{opts: "--ctproto 0x11", save: " --ctproto 17", listN: " ctproto 17"},
	{opts: "--ctorigsrc 10.1.2.3/8", save: " --ctorigsrc 10.1.2.3/8", listN: " ctorigsrc 10.1.2.3/8"},
	// A non-contiguous mask, and a number above 32 (read as a dotted
	// mask), become /32.
	{opts: "! --ctorigdst 10.1.2.3/255.0.255.0", save: " ! --ctorigdst 10.1.2.3", listN: " ! ctorigdst 10.1.2.3"},
	{opts: "--ctorigdst 10.1.2.3/33", save: " --ctorigdst 10.1.2.3", listN: " ctorigdst 10.1.2.3"},
	{opts: "--ctorigdst 10.1.2.3/1.0.0.0", save: " --ctorigdst 10.1.2.3", listN: " ctorigdst 10.1.2.3"},
	{opts: "--ctorigdst 10.1.2.3/255.255.0.0", save: " --ctorigdst 10.1.2.3/16", listN: " ctorigdst 10.1.2.3/16"},
	{opts: "--ctorigdst 10.1.2.3/0x10", save: " --ctorigdst 10.1.2.3/16", listN: " ctorigdst 10.1.2.3/16"},
	{opts: "--ctorigdst 10.1.2.3/010", save: " --ctorigdst 10.1.2.3/8", listN: " ctorigdst 10.1.2.3/8"},
	{opts: "--ctreplsrc 10.1.2.3/32", save: " --ctreplsrc 10.1.2.3", listN: " ctreplsrc 10.1.2.3"},
	{opts: "--ctrepldst 10.1.2.3/0", save: " --ctrepldst 10.1.2.3/0", listN: " ctrepldst 10.1.2.3/0"},
	// Without -n the address 0 is "anywhere" whatever the mask, and
	// names come from /etc/hosts and /etc/networks.
	{opts: "--ctorigdst 0.0.0.0/0", save: " --ctorigdst 0.0.0.0/0", listN: " ctorigdst 0.0.0.0/0", list: " ctorigdst anywhere"},
	{opts: "--ctorigdst 0.0.0.0/8", save: " --ctorigdst 0.0.0.0/8", listN: " ctorigdst 0.0.0.0/8", list: " ctorigdst anywhere"},
	{opts: "--ctorigdst 127.0.0.1/8", save: " --ctorigdst 127.0.0.1/8", listN: " ctorigdst 127.0.0.1/8", list: " ctorigdst localhost/8"},
	{opts: "--ctorigsrc localhost", save: " --ctorigsrc 127.0.0.1", listN: " ctorigsrc 127.0.0.1", list: " ctorigsrc localhost"},
	// inet_aton's short and hex forms.
	{opts: "--ctorigsrc 10.1", save: " --ctorigsrc 10.0.0.1", listN: " ctorigsrc 10.0.0.1"},
	{opts: "--ctorigdst 10.1.2", save: " --ctorigdst 10.1.0.2", listN: " ctorigdst 10.1.0.2"},
	{opts: "--ctorigdst 0x0a.1.2.3", save: " --ctorigdst 10.1.2.3", listN: " ctorigdst 10.1.2.3"},
	{opts: "--ctorigsrcport 80:90", save: " --ctorigsrcport 80:90", listN: " ctorigsrcport 80:90"},
	{opts: "! --ctorigdstport :90", save: " ! --ctorigdstport 0:90", listN: " ! ctorigdstport 0:90"},
	{opts: "--ctreplsrcport 90:", save: " --ctreplsrcport 90:65535", listN: " ctreplsrcport 90:65535"},
	{opts: "--ctrepldstport 90:80", save: " --ctrepldstport 90:80", listN: " ctrepldstport 90:80"},
	{opts: "--ctrepldstport http", save: " --ctrepldstport 80", listN: " ctrepldstport 80"},
	{opts: "--ctorigsrcport 80:ssh", save: " --ctorigsrcport 80:22", listN: " ctorigsrcport 80:22"},
	{opts: "--ctorigsrcport :", save: " --ctorigsrcport 0:65535", listN: " ctorigsrcport 0:65535"},
	// A range ending at 0 prints its lower end alone.
	{opts: "--ctorigsrcport 80:0", save: " --ctorigsrcport 80", listN: " ctorigsrcport 80"},
	{opts: "--ctstatus NONE", save: " --ctstatus NONE", listN: " ctstatus NONE"},
	{opts: "--ctstatus none", save: " --ctstatus NONE", listN: " ctstatus NONE"},
	{opts: "! --ctstatus CONFIRMED,ASSURED,SEEN_REPLY,EXPECTED", save: " ! --ctstatus EXPECTED,SEEN_REPLY,ASSURED,CONFIRMED",
		listN: " ! ctstatus EXPECTED,SEEN_REPLY,ASSURED,CONFIRMED"},
	{opts: "--ctstatus A", save: " --ctstatus ASSURED", listN: " ctstatus ASSURED"},
	{opts: "--ctstatus N", save: " --ctstatus NONE", listN: " ctstatus NONE"},
	{opts: "--ctstatus S,c", save: " --ctstatus SEEN_REPLY,CONFIRMED", listN: " ctstatus SEEN_REPLY,CONFIRMED"},
	{opts: "--ctstatus e", save: " --ctstatus EXPECTED", listN: " ctstatus EXPECTED"},
	{opts: "--ctexpire 5:10", save: " --ctexpire 5:10", listN: " ctexpire 5:10"},
	{opts: "--ctexpire 3:3", save: " --ctexpire 3", listN: " ctexpire 3"},
	{opts: "! --ctexpire 10:5", save: " ! --ctexpire 10:5", listN: " ! ctexpire 10:5"},
	{opts: "--ctexpire :5", save: " --ctexpire 0:5", listN: " ctexpire 0:5"},
	{opts: "--ctexpire 5:", save: " --ctexpire 5:4294967295", listN: " ctexpire 5:4294967295"},
	{opts: "--ctexpire 4294967295", save: " --ctexpire 4294967295", listN: " ctexpire 4294967295"},
	{opts: "--ctexpire 0x10:0x20", save: " --ctexpire 16:32", listN: " ctexpire 16:32"},
	{opts: "--ctdir ORIGINAL", save: " --ctdir ORIGINAL", listN: " ctdir ORIGINAL"},
	{opts: "--ctdir reply", save: " --ctdir REPLY", listN: " ctdir REPLY"},
	// Every option: printed in iptables' fixed order.
	{opts: "--ctdir REPLY ! --ctexpire 5 --ctstatus ASSURED ! --ctrepldstport 5 --ctreplsrcport 6 --ctorigdstport 7 ! --ctorigsrcport 8 --ctrepldst 1.1.1.1 ! --ctreplsrc 2.2.2.2/8 --ctorigdst 3.3.3.3 --ctorigsrc 4.4.4.4 --ctproto 6 ! --ctstate NEW",
		save:  " ! --ctstate NEW --ctproto 6 --ctorigsrc 4.4.4.4 --ctorigdst 3.3.3.3 ! --ctreplsrc 2.2.2.2/8 --ctrepldst 1.1.1.1 ! --ctorigsrcport 8 --ctorigdstport 7 --ctreplsrcport 6 ! --ctrepldstport 5 --ctstatus ASSURED ! --ctexpire 5 --ctdir REPLY",
		listN: " ! ctstate NEW ctproto 6 ctorigsrc 4.4.4.4 ctorigdst 3.3.3.3 ! ctreplsrc 2.2.2.2/8 ctrepldst 1.1.1.1 ! ctorigsrcport 8 ctorigdstport 7 ctreplsrcport 6 ! ctrepldstport 5 ctstatus ASSURED ! ctexpire 5 ctdir REPLY"},
}

var conntrackErr = []errVector{
	{opts: "", err: "At least one option is required"},
	{opts: "--ctstate FOO", err: `Bad ctstate "FOO"`},
	{opts: "--ctstate NEW,", err: `Bad ctstate ""`},
	{opts: "--ctstate ,NEW", err: `Bad ctstate ",NEW"`},
	{opts: "--ctstate NEW --ctstate INVALID", err: "only be used once"},
	{opts: "--ctstatus FOO", err: `Bad ctstatus "FOO"`},
	{opts: "--ctstatus ASSURED,", err: `Bad ctstatus ""`},
	{opts: "--ctstatus ,ASSURED", err: `Bad ctstatus ",ASSURED"`},
	{opts: "--ctstatus ASSURED --ctstatus CONFIRMED", err: "only be used once"},
	{opts: "--ctproto 256", err: `unknown protocol "256"`},
	{opts: "--ctproto nosuchproto", err: "unknown protocol"},
	{opts: "--ctexpire 4294967296", err: "--ctexpire"},
	{opts: "--ctexpire 1:2:3", err: "--ctexpire"},
	{opts: "--ctdir O", err: `Bad value for "--ctdir"`},
	{opts: "--ctdir ORIGINALX", err: `Bad value for "--ctdir"`},
	{opts: "! --ctdir REPLY", err: "cannot be inverted"},
	{opts: "--ctorigdst 10.1.2.3/abc", err: "neither a valid network mask"},
	{opts: "--ctorigdst 10.1.2.3/-1", err: "neither a valid network mask"},
	{opts: "--ctorigdst 10.1.2.3/", err: "neither a valid network mask"},
	{opts: "--ctorigdst 10.1.2.3/255.255.255.256", err: "neither a valid network mask"},
	{opts: "--ctorigsrc 1.2.3.4,5.6.7.8", err: "not found"},
	{opts: "--ctorigsrc ::1", err: "not found"},
	{opts: "--ctorigsrcport 0x50", err: "does not resolve"},
	// iptables takes 65536 as port 0 (getaddrinfo wraps); qtables
	// refuses it, as the udp match does.
	{opts: "--ctorigsrcport 65536", err: "must be 0..65535", dev: "iptables 1.8.9 saves it as --ctorigsrcport 0"},
}

func TestConntrackFormats(t *testing.T) { runFmtVectors(t, "conntrack", conntrackFmt) }

func TestConntrackErrors(t *testing.T) { runErrVectors(t, "conntrack", conntrackErr) }

// TestConntrackMatch checks every option against connections in the
// table, with xt_conntrack's order: the state first, then, without a
// connection, "matched iff --ctstate was given".
func TestConntrackMatch(t *testing.T) {
	r := newCtRig(t)
	// 10.1.0.1:1234 -> 198.51.100.7:80, handshake done.
	r.handshake(ipC, ipS, 1234, 80)
	est := r.track(tcpSeg(t, ipS, ipC, 80, 1234, "A", 5001, 1001, 0)) // reply direction
	cases := []struct {
		opts string
		want bool
	}{
		{"--ctstate ESTABLISHED", true},
		{"! --ctstate ESTABLISHED", false},
		{"--ctstate NEW,INVALID", false},
		{"--ctstate SNAT", false}, // no NAT: never set
		{"! --ctstate SNAT,DNAT", true},
		{"--ctproto tcp", true},
		{"--ctproto udp", false},
		{"! --ctproto udp", true},
		{"--ctorigsrc 10.1.0.0/16", true},
		{"--ctorigsrc 10.1.0.1/255.255.0.0", true}, // host bits kept, masked at compare
		{"! --ctorigsrc 10.1.0.1", false},
		{"--ctorigdst 198.51.100.7", true},
		{"--ctreplsrc 198.51.100.7", true},
		{"--ctrepldst 10.1.0.1", true},
		{"--ctrepldst 10.1.0.2", false},
		{"--ctorigsrcport 1234", true},
		{"--ctorigdstport 80", true},
		{"--ctreplsrcport 80", true},
		{"--ctrepldstport 1000:2000", true},
		{"! --ctrepldstport 1000:2000", false},
		{"--ctorigdstport 90:80", false}, // a reversed range holds nothing
		{"! --ctorigdstport 90:80", true},
		{"--ctstatus SEEN_REPLY", true},
		{"--ctstatus ASSURED", true},
		{"--ctstatus CONFIRMED", true},
		{"--ctstatus EXPECTED", false},
		{"--ctstatus NONE", false}, // an empty mask never matches
		{"! --ctstatus NONE", true},
		{"--ctexpire 432000", true}, // ESTABLISHED: 5 days, just refreshed
		{"--ctexpire 0:431999", false},
		{"! --ctexpire 0:431999", true},
		{"--ctdir REPLY", true},
		{"--ctdir ORIGINAL", false},
		{"--ctstate ESTABLISHED --ctdir ORIGINAL", false},
		{"--ctstate ESTABLISHED --ctproto 6 --ctorigsrc 10.1.0.1 --ctrepldstport 1234 --ctstatus ASSURED", true},
	}
	for _, tc := range cases {
		m := mustBuild(t, "conntrack", ruleAny, tc.opts)
		if got := m.Match(est); got != tc.want {
			t.Errorf("established reply, %s: %v, want %v", tc.opts, got, tc.want)
		}
	}
	r.accept()

	// The first packet of a connection: NEW, ORIGINAL, not confirmed, no
	// timer running (nf_ct_expires is 0).
	c := r.track(udpDgram(t, ipC, ipS, 5353, 53, 8))
	for _, tc := range []struct {
		opts string
		want bool
	}{
		{"--ctstate NEW --ctdir ORIGINAL", true},
		{"--ctstatus CONFIRMED", false},
		{"! --ctstatus CONFIRMED", true},
		{"--ctstatus SEEN_REPLY", false},
		{"--ctexpire 0", true},
		{"--ctproto 17 --ctorigdstport 53 --ctreplsrcport 53", true},
	} {
		if got := mustBuild(t, "conntrack", ruleAny, tc.opts).Match(c); got != tc.want {
			t.Errorf("first packet, %s: %v, want %v", tc.opts, got, tc.want)
		}
	}
	r.accept()
	r.now = r.now.Add(10 * time.Second)
	c = r.track(udpDgram(t, ipC, ipS, 5353, 53, 8)) // again, unanswered: 30 s from now
	if !mustBuild(t, "conntrack", ruleAny, "--ctexpire 30 --ctstate NEW --ctstatus CONFIRMED").Match(c) {
		t.Error("repeated unanswered UDP: not NEW, confirmed, 30 s left")
	}
	r.accept()

	// ICMP: the ports are the identifier and type<<8|code of each tuple.
	r.pass(icmpMsg(t, ipC, ipS, 8, 0, 0x4242, nil))
	c = r.track(icmpMsg(t, ipS, ipC, 0, 0, 0x4242, nil))
	if !mustBuild(t, "conntrack", ruleAny, "--ctproto icmp --ctorigsrcport 16962 --ctorigdstport 2048 --ctrepldstport 0").Match(c) {
		t.Error("echo reply: ICMP tuple words not matched as ports")
	}
	r.accept()

	// No connection: only --ctstate counts.
	c = r.track(tcpSeg(t, ipC, ipS, 9, 9, "F", 1, 0, 0))
	for _, tc := range []struct {
		opts string
		want bool
	}{
		{"--ctstate INVALID", true},
		{"--ctstate INVALID --ctproto udp --ctdir REPLY --ctorigsrc 1.2.3.4", true}, // the rest is ignored
		{"--ctproto tcp", false},
		{"! --ctproto tcp", false},
		{"! --ctstatus NONE", false},
		{"! --ctstate NEW", true},
		{"--ctstate NEW", false},
	} {
		if got := mustBuild(t, "conntrack", ruleAny, tc.opts).Match(c); got != tc.want {
			t.Errorf("no connection, %s: %v, want %v", tc.opts, got, tc.want)
		}
	}
	r.drop()
}

func TestInetAton(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"1.2.3.4", 0x01020304, true},
		{"10.1", 0x0a000001, true},
		{"10.1.2", 0x0a010002, true},
		{"167772161", 0x0a000001, true},
		{"0x0a.010.1.1", 0x0a080101, true},
		{"1.2.3.256", 0, false},
		{"1.2.65536", 0, false},
		{"1.2.65535", 0x0102ffff, true},
		{"1.2.3.4.5", 0, false},
		{"1..2", 0, false},
		{"", 0, false},
		{"-1", 0, false},
		{"08", 0, false},
	} {
		got, ok := inetAton(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("inetAton(%q) = %#x %v, want %#x %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
