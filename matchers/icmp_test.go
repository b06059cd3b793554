package matchers

import (
	"testing"

	"github.com/qtables/qtables/packet"
)

var icmpFmt = []fmtVector{
	{proto: "icmp", opts: "--icmp-type destination-unreachable", save: " --icmp-type 3",
		listN: " icmptype 3", list: " icmp destination-unreachable"},
	{proto: "icmp", opts: "--icmp-type 255/0:255", save: " --icmp-type any", listN: " icmptype 255", list: " icmp any"},
	{proto: "icmp", opts: "--icmp-type any", save: " --icmp-type any", listN: " icmptype 255", list: " icmp any"},
	{proto: "icmp", opts: "--icmp-type Any", save: " --icmp-type any", listN: " icmptype 255", list: " icmp any"},
	{proto: "icmp", opts: "--icmp-type 255", save: " --icmp-type any", listN: " icmptype 255", list: " icmp any"},
	{proto: "icmp", opts: "! --icmp-type any", save: " ! --icmp-type any", listN: " icmp !type 255", list: " icmp !any"},
	// Type 255 saves as "any" whatever its codes (1.8.9; the kernel
	// ignores the codes of type 255).
	{proto: "icmp", opts: "--icmp-type 255/255", save: " --icmp-type any", listN: " icmptype 255 code 255"},
	{proto: "icmp", opts: "--icmp-type 255/0", save: " --icmp-type any", listN: " icmptype 255 code 0"},
	{proto: "icmp", opts: "--icmp-type 255/0:254", save: " --icmp-type any", listN: " icmptype 255 codes 0-254"},
	{proto: "icmp", opts: "--icmp-type echo-reply", save: " --icmp-type 0", listN: " icmptype 0", list: " icmp echo-reply"},
	{proto: "icmp", opts: "--icmp-type pong", save: " --icmp-type 0", listN: " icmptype 0", list: " icmp echo-reply"},
	{proto: "icmp", opts: "--icmp-type ping", save: " --icmp-type 8", listN: " icmptype 8", list: " icmp echo-request"},
	{proto: "icmp", opts: "--icmp-type ECHO-REQ", save: " --icmp-type 8", listN: " icmptype 8", list: " icmp echo-request"},
	{proto: "icmp", opts: "! --icmp-type 8", save: " ! --icmp-type 8", listN: " icmp !type 8", list: " icmp !echo-request"},
	{proto: "icmp", opts: "--icmp-type port-unr", save: " --icmp-type 3/3", listN: " icmptype 3 code 3", list: " icmp port-unreachable"},
	{proto: "icmp", opts: "! --icmp-type 3/3", save: " ! --icmp-type 3/3", listN: " icmp !type 3 code 3", list: " icmp !port-unreachable"},
	{proto: "icmp", opts: "--icmp-type 3/0", save: " --icmp-type 3/0", listN: " icmptype 3 code 0", list: " icmp network-unreachable"},
	{proto: "icmp", opts: "--icmp-type 3/0:255", save: " --icmp-type 3", listN: " icmptype 3", list: " icmp destination-unreachable"},
	// Only the lower code of a range is saved (lossy, as in iptables).
	{proto: "icmp", opts: "--icmp-type 3/1:4", save: " --icmp-type 3/1", listN: " icmptype 3 codes 1-4"},
	{proto: "icmp", opts: "--icmp-type 3/4:1", save: " --icmp-type 3/4", listN: " icmptype 3 codes 4-1"},
	{proto: "icmp", opts: "! --icmp-type 3/1:4", save: " ! --icmp-type 3/1", listN: " icmp !type 3 codes 1-4"},
	{proto: "icmp", opts: "--icmp-type 3/1:1", save: " --icmp-type 3/1", listN: " icmptype 3 code 1", list: " icmp host-unreachable"},
	{proto: "icmp", opts: "--icmp-type 3/8", save: " --icmp-type 3/8", listN: " icmptype 3 code 8"},
	{proto: "icmp", opts: "--icmp-type 3/16", save: " --icmp-type 3/16", listN: " icmptype 3 code 16"},
	{proto: "icmp", opts: "--icmp-type 3/15", save: " --icmp-type 3/15", listN: " icmptype 3 code 15", list: " icmp precedence-cutoff"},
	{proto: "icmp", opts: "--icmp-type tos-host-unreachable", save: " --icmp-type 3/12", listN: " icmptype 3 code 12", list: " icmp TOS-host-unreachable"},
	{proto: "icmp", opts: "--icmp-type 5/2", save: " --icmp-type 5/2", listN: " icmptype 5 code 2", list: " icmp TOS-network-redirect"},
	{proto: "icmp", opts: "--icmp-type ttl-exceeded", save: " --icmp-type 11", listN: " icmptype 11", list: " icmp time-exceeded"},
	{proto: "icmp", opts: "--icmp-type 11/1", save: " --icmp-type 11/1", listN: " icmptype 11 code 1", list: " icmp ttl-zero-during-reassembly"},
	{proto: "icmp", opts: "--icmp-type ip-header-bad", save: " --icmp-type 12/0", listN: " icmptype 12 code 0", list: " icmp ip-header-bad"},
	{proto: "icmp", opts: "--icmp-type 12/1", save: " --icmp-type 12/1", listN: " icmptype 12 code 1", list: " icmp required-option-missing"},
	{proto: "icmp", opts: "--icmp-type 4", save: " --icmp-type 4", listN: " icmptype 4", list: " icmp source-quench"},
	{proto: "icmp", opts: "--icmp-type 9", save: " --icmp-type 9", listN: " icmptype 9", list: " icmp router-advertisement"},
	{proto: "icmp", opts: "--icmp-type 10", save: " --icmp-type 10", listN: " icmptype 10", list: " icmp router-solicitation"},
	{proto: "icmp", opts: "--icmp-type 13", save: " --icmp-type 13", listN: " icmptype 13", list: " icmp timestamp-request"},
	{proto: "icmp", opts: "--icmp-type 14", save: " --icmp-type 14", listN: " icmptype 14", list: " icmp timestamp-reply"},
	{proto: "icmp", opts: "--icmp-type 15", save: " --icmp-type 15", listN: " icmptype 15"},
	{proto: "icmp", opts: "--icmp-type 17", save: " --icmp-type 17", listN: " icmptype 17", list: " icmp address-mask-request"},
	{proto: "icmp", opts: "--icmp-type 18", save: " --icmp-type 18", listN: " icmptype 18", list: " icmp address-mask-reply"},
	// Numbers are base 0, with strtoul's leading space and '+'.
	{proto: "icmp", opts: "--icmp-type 0x8", save: " --icmp-type 8", listN: " icmptype 8", list: " icmp echo-request"},
	{proto: "icmp", opts: "--icmp-type 010", save: " --icmp-type 8", listN: " icmptype 8", list: " icmp echo-request"},
	{proto: "icmp", opts: "--icmp-type 07", save: " --icmp-type 7", listN: " icmptype 7"},
	{proto: "icmp", opts: "--icmp-type 3/010", save: " --icmp-type 3/8", listN: " icmptype 3 code 8"},
	{proto: "icmp", opts: "--icmp-type 3/1:0x4", save: " --icmp-type 3/1", listN: " icmptype 3 codes 1-4"},
	{proto: "icmp", opts: "--icmp-type +8", save: " --icmp-type 8", listN: " icmptype 8", list: " icmp echo-request"},
	{proto: "icmp", opts: `--icmp-type " 8"`, save: " --icmp-type 8", listN: " icmptype 8", list: " icmp echo-request"},
	{proto: "icmp", opts: "--icmp-type 3/+1", save: " --icmp-type 3/1", listN: " icmptype 3 code 1", list: " icmp host-unreachable"},
	{proto: "icmp", opts: "--icmp-type 3:3/1", save: " --icmp-type 3/1", listN: " icmptype 3 code 1", list: " icmp host-unreachable"},
}

var icmpErr = []errVector{
	{proto: "icmp", opts: "", err: "--icmp-type must be specified"},
	{proto: "icmp", opts: "--icmp-type foo", err: `unknown type name "foo"`},
	{proto: "icmp", opts: "--icmp-type 256", err: `invalid type "256"`},
	{proto: "icmp", opts: "--icmp-type -1", err: `unknown type name "-1"`},
	{proto: "icmp", opts: "--icmp-type /3", err: `unknown type name "/3"`},
	{proto: "icmp", opts: "--icmp-type 3:", err: `unknown type name "3:"`},
	{proto: "icmp", opts: "--icmp-type echo-reply/3", err: `unknown type name "echo-reply/3"`},
	{proto: "icmp", opts: "--icmp-type echo", err: `ambiguous type name "echo": "echo-reply" or "echo-request"?`},
	{proto: "icmp", opts: "--icmp-type network", err: `"network-unreachable" or "network-unknown"?`},
	{proto: "icmp", opts: "--icmp-type t", err: `"TOS-network-unreachable" or "TOS-host-unreachable"?`},
	{proto: "icmp", opts: "--icmp-type ti", err: `"time-exceeded" or "timestamp-request"?`},
	{proto: "icmp", opts: "--icmp-type a", err: `"any" or "address-mask-request"?`},
	{proto: "icmp", opts: "--icmp-type host", err: `"host-unreachable" or "host-unknown"?`},
	{proto: "icmp", opts: "--icmp-type router", err: `"router-advertisement" or "router-solicitation"?`},
	{proto: "icmp", opts: `--icmp-type ""`, err: `"any" or "echo-reply"?`},
	{proto: "icmp", opts: "--icmp-type 3/256", err: `invalid code in "3/256"`},
	{proto: "icmp", opts: "--icmp-type 3/-1", err: "invalid code"},
	{proto: "icmp", opts: "--icmp-type 8/", err: "invalid code"},
	{proto: "icmp", opts: "--icmp-type 3/:4", err: "invalid code"},
	{proto: "icmp", opts: "--icmp-type 3/4:", err: "invalid code"},
	{proto: "icmp", opts: "--icmp-type 3/1:256", err: "invalid code"},
	{proto: "icmp", opts: "--icmp-type 3/x", err: "invalid code"},
	{proto: "icmp", opts: "--icmp-type 3:4", err: "type range not supported"},
	{proto: "icmp", opts: "--icmp-type 08", err: `unknown character '8'`},
	{proto: "icmp", opts: "--icmp-type 3/08", err: `unknown character '8'`},
	{proto: "icmp", opts: "--icmp-type 8x", err: `unknown character 'x'`},
	{proto: "icmp", opts: "--icmp-type 0x", err: `unknown character 'x'`},
	{proto: "icmp", opts: `--icmp-type "8 "`, err: `unknown character ' '`},
	{proto: "icmp", opts: "--icmp-type 3/1-4", err: `unknown character '-'`},
	{proto: "icmp", opts: "--icmp-type 3/1:4:5", err: `unknown character ':'`},
	{proto: "icmp", opts: "--icmp-type 3/3/3", err: `unknown character '/'`},
	{proto: "icmp", opts: "--icmp-type 4 --icmp-type 5", err: "only one --icmp-type"},
	{proto: "tcp", opts: "--icmp-type 3", err: "requires '-p icmp'"},
	{proto: "", opts: "--icmp-type 3", err: "requires '-p icmp'"},
}

func TestICMPFormats(t *testing.T) { runFmtVectors(t, "icmp", icmpFmt) }

func TestICMPErrors(t *testing.T) { runErrVectors(t, "icmp", icmpErr) }

func TestICMPNameTable(t *testing.T) {
	// Every name and alias parses to its own table row, and the row is
	// reachable by any prefix that no other name shares.
	for _, e := range icmpNames {
		typ, lo, hi, err := parseICMPType(e.name)
		if err != nil || typ != e.typ || lo != e.lo || hi != e.hi {
			t.Errorf("%s: got %d/%d:%d %v, want %d/%d:%d", e.name, typ, lo, hi, err, e.typ, e.lo, e.hi)
		}
	}
}

func icmpPkt(typ, code uint8) pkt { return pkt{proto: packet.ProtoICMP, l4: icmpHdr(typ, code)} }

func TestICMPMatch(t *testing.T) {
	echo := mustBuild(t, "icmp", ruleICMP, "--icmp-type echo-request")
	short := icmpPkt(8, 0)
	short.l4 = short.l4[:7]
	frag := icmpPkt(8, 0)
	frag.fragWord = 3
	runMatchCases(t, echo, []matchCase{
		{"echo request", icmpPkt(8, 0), true, false},
		{"echo request odd code", icmpPkt(8, 200), true, false},
		{"echo reply", icmpPkt(0, 0), false, false},
		{"fragment", frag, false, false},
		{"7-byte header", short, false, true},
	})
	codes := mustBuild(t, "icmp", ruleICMP, "! --icmp-type 3/1:4")
	runMatchCases(t, codes, []matchCase{
		{"code 0 outside", icmpPkt(3, 0), true, false},
		{"code 1", icmpPkt(3, 1), false, false},
		{"code 4", icmpPkt(3, 4), false, false},
		{"code 5 outside", icmpPkt(3, 5), true, false},
		{"other type", icmpPkt(11, 2), true, false},
	})
	anyT := mustBuild(t, "icmp", ruleICMP, "--icmp-type 255/255")
	runMatchCases(t, anyT, []matchCase{{"type 255 ignores codes", icmpPkt(0, 0), true, false}})
	notAny := mustBuild(t, "icmp", ruleICMP, "! --icmp-type any")
	runMatchCases(t, notAny, []matchCase{{"! any", icmpPkt(8, 0), false, false}})
}

func TestICMPMatchDoesNotAllocate(t *testing.T) {
	m := mustBuild(t, "icmp", ruleICMP, "--icmp-type 3/3")
	c := ctxFor(icmpPkt(3, 3).view())
	if n := testing.AllocsPerRun(100, func() { m.Match(c) }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}
