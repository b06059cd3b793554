package matchers

import "testing"

var lengthFmt = []fmtVector{
	{opts: "--length :2", save: " --length 0:2", listN: " length 0:2"},
	{opts: "--length 4:", save: " --length 4:65535", listN: " length 4:65535"},
	{opts: "! --length 4:", save: " ! --length 4:65535", listN: " length !4:65535"},
	{opts: "--length 4:4", save: " --length 4", listN: " length 4"},
	{opts: "--length :", save: " --length 0:65535", listN: " length 0:65535"},
	{opts: "! --length 5", save: " ! --length 5", listN: " length !5"},
	{opts: "--length 65535", save: " --length 65535", listN: " length 65535"},
	{opts: "--length 0x10:0x20", save: " --length 16:32", listN: " length 16:32"},
	{opts: `--length " 5"`, save: " --length 5", listN: " length 5"},
	{opts: `--length ""`, save: " --length 0", listN: " length 0"},
	// iptables 1.8.9 accepts a reversed range (spec §5.13 says 1.8.11
	// refuses it); it never matches.
	{opts: "--length 4:3", save: " --length 4:3", listN: " length 4:3"},
}

var lengthErr = []errVector{
	{opts: "--length 0:65536", err: `bad value "65536"`},
	{opts: "--length -1", err: `bad value "-1"`},
	{opts: "--length 1:2:3", err: "too many components"},
	{opts: "--length 5x", err: `bad value "5x"`},
	{opts: "", err: "--length must be specified"},
	{opts: "--length 1 --length 2", err: "only one --length"},
}

func TestLengthFormats(t *testing.T) { runFmtVectors(t, "length", lengthFmt) }

func TestLengthErrors(t *testing.T) { runErrVectors(t, "length", lengthErr) }

func TestLengthMatch(t *testing.T) {
	// The IPv4 total length: 20 bytes of IP header + 8 of UDP + payload.
	sized := func(n int) pkt { return pkt{proto: 17, l4: make([]byte, n-20)} }
	m := mustBuild(t, "length", ruleAny, "--length 28:100")
	runMatchCases(t, m, []matchCase{
		{"27", sized(27), false, false},
		{"28", sized(28), true, false},
		{"100", sized(100), true, false},
		{"101", sized(101), false, false},
	})
	inv := mustBuild(t, "length", ruleAny, "! --length 1500")
	runMatchCases(t, inv, []matchCase{{"1500", sized(1500), false, false}, {"1499", sized(1499), true, false}})
	rev := mustBuild(t, "length", ruleAny, "--length 100:28")
	runMatchCases(t, rev, []matchCase{{"reversed", sized(50), false, false}})
	// Len is what counts, not the captured bytes.
	v := sized(40).view()
	v.Len = 1400
	if c := ctxFor(v); m.Match(c) {
		t.Error("length 28:100 matched a 1400-byte datagram")
	}
}
