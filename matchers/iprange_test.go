package matchers

import "testing"

var iprangeFmt = []fmtVector{
	{opts: "--src-range 1.2.3.4", save: " --src-range 1.2.3.4-1.2.3.4", listN: " source IP range 1.2.3.4-1.2.3.4"},
	{opts: "--src-range 1.2.3.4-1.2.3.4 --dst-range 5.6.7.8-5.6.7.9",
		save:  " --src-range 1.2.3.4-1.2.3.4 --dst-range 5.6.7.8-5.6.7.9",
		listN: " source IP range 1.2.3.4-1.2.3.4 destination IP range 5.6.7.8-5.6.7.9"},
	{opts: "--dst-range 5.6.7.8 --src-range 1.2.3.5",
		save:  " --src-range 1.2.3.5-1.2.3.5 --dst-range 5.6.7.8-5.6.7.8",
		listN: " source IP range 1.2.3.5-1.2.3.5 destination IP range 5.6.7.8-5.6.7.8"},
	{opts: "--dst-range 10.0.0.0-10.255.255.255", save: " --dst-range 10.0.0.0-10.255.255.255",
		listN: " destination IP range 10.0.0.0-10.255.255.255"},
	// A reversed range is accepted (the kernel warns) and never matches.
	{opts: "! --src-range 1.2.3.4-1.2.3.10 ! --dst-range 10.0.0.9-10.0.0.1",
		save:  " ! --src-range 1.2.3.4-1.2.3.10 ! --dst-range 10.0.0.9-10.0.0.1",
		listN: " source IP range ! 1.2.3.4-1.2.3.10 destination IP range ! 10.0.0.9-10.0.0.1"},
	// xtables_numeric_to_ipaddr: base-0 parts, missing parts are zero,
	// only 19 bytes read.
	{opts: "--src-range 1.2.3", save: " --src-range 1.2.3.0-1.2.3.0", listN: " source IP range 1.2.3.0-1.2.3.0"},
	{opts: "--src-range 1.2", save: " --src-range 1.2.0.0-1.2.0.0", listN: " source IP range 1.2.0.0-1.2.0.0"},
	{opts: "--src-range 1", save: " --src-range 1.0.0.0-1.0.0.0", listN: " source IP range 1.0.0.0-1.0.0.0"},
	{opts: "--src-range 010.0.0.1", save: " --src-range 8.0.0.1-8.0.0.1", listN: " source IP range 8.0.0.1-8.0.0.1"},
	{opts: "--src-range 0x10.1.1.1", save: " --src-range 16.1.1.1-16.1.1.1", listN: " source IP range 16.1.1.1-16.1.1.1"},
	{opts: "--src-range 01.2.3.4", save: " --src-range 1.2.3.4-1.2.3.4", listN: " source IP range 1.2.3.4-1.2.3.4"},
	{opts: `--src-range " 1.2.3.4"`, save: " --src-range 1.2.3.4-1.2.3.4", listN: " source IP range 1.2.3.4-1.2.3.4"},
	{opts: "--src-range +1.2.3.4", save: " --src-range 1.2.3.4-1.2.3.4", listN: " source IP range 1.2.3.4-1.2.3.4"},
	{opts: "--src-range 1.2.3.000000000000000004", save: " --src-range 1.2.3.0-1.2.3.0", listN: " source IP range 1.2.3.0-1.2.3.0"},
}

var iprangeErr = []errVector{
	{opts: "", err: "you must specify --src-range or --dst-range"},
	{opts: "--src-range 1.2.3.4/24", err: `invalid address "1.2.3.4/24"`},
	{opts: "--src-range localhost", err: `invalid address "localhost"`},
	{opts: "--src-range 1.2.3.4-", err: `invalid address ""`},
	{opts: "--src-range -1.2.3.4", err: `invalid address ""`},
	{opts: "--src-range 1.2.3.4-1.2.3.5-1.2.3.6", err: `invalid address "1.2.3.5-1.2.3.6"`},
	{opts: "--src-range 1.2.3.256", err: "invalid address"},
	{opts: "--src-range 1.2.3.4.5", err: "invalid address"},
	{opts: "--src-range 1..3.4", err: "invalid address"},
	{opts: "--src-range ::1", err: "invalid address"},
	{opts: "--src-range 1.2.3.4 --src-range 1.2.3.5", err: "only one --src-range"},
}

func TestIPRangeFormats(t *testing.T) { runFmtVectors(t, "iprange", iprangeFmt) }

func TestIPRangeErrors(t *testing.T) { runErrVectors(t, "iprange", iprangeErr) }

func TestIPRangeMatch(t *testing.T) {
	m := mustBuild(t, "iprange", ruleAny, "--src-range 10.0.0.250-10.0.1.5 ! --dst-range 192.168.0.0-192.168.255.255")
	at := func(src, dst string) pkt { return pkt{proto: 6, src: src, dst: dst, l4: tcpHdr(1, 2, 0)} }
	runMatchCases(t, m, []matchCase{
		{"low end", at("10.0.0.250", "8.8.8.8"), true, false},
		{"crosses an octet", at("10.0.1.0", "8.8.8.8"), true, false},
		{"high end", at("10.0.1.5", "8.8.8.8"), true, false},
		{"below", at("10.0.0.249", "8.8.8.8"), false, false},
		{"above", at("10.0.1.6", "8.8.8.8"), false, false},
		{"dst inside inverted range", at("10.0.1.0", "192.168.3.4"), false, false},
		{"dst just outside", at("10.0.1.0", "192.169.0.0"), true, false},
	})
	// Host-order comparison: 128.0.0.0 is above 127.255.255.255 (a signed
	// or byte-swapped compare gets this wrong).
	hi := mustBuild(t, "iprange", ruleAny, "--dst-range 127.0.0.0-200.0.0.0")
	runMatchCases(t, hi, []matchCase{
		{"128.0.0.0", at("1.1.1.1", "128.0.0.0"), true, false},
		{"1.0.0.200", at("1.1.1.1", "1.0.0.200"), false, false},
	})
	rev := mustBuild(t, "iprange", ruleAny, "--src-range 10.0.0.9-10.0.0.1")
	runMatchCases(t, rev, []matchCase{{"reversed range", at("10.0.0.5", "1.1.1.1"), false, false}})
	revInv := mustBuild(t, "iprange", ruleAny, "! --src-range 10.0.0.9-10.0.0.1")
	runMatchCases(t, revInv, []matchCase{{"inverted reversed range", at("10.0.0.5", "1.1.1.1"), true, false}})
}

func TestIPRangeMatchDoesNotAllocate(t *testing.T) {
	m := mustBuild(t, "iprange", ruleAny, "--src-range 10.0.0.0-10.0.0.255 --dst-range 10.0.0.0-10.0.0.255")
	c := ctxFor(pkt{proto: 17, l4: udpHdr(1, 2)}.view())
	if n := testing.AllocsPerRun(100, func() { m.Match(c) }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}
