package matchers

import "testing"

// connbytesFmt were checked against iptables-save / iptables -L[ -n] 1.8.9.
var connbytesFmt = []fmtVector{
	{opts: "--connbytes 10 --connbytes-dir original --connbytes-mode packets",
		save: " --connbytes 10 --connbytes-mode packets --connbytes-dir original", listN: " connbytes 10 connbytes mode packets connbytes direction original"},
	{opts: "! --connbytes 10 --connbytes-dir reply --connbytes-mode avgpkt",
		save: " ! --connbytes 10 --connbytes-mode avgpkt --connbytes-dir reply", listN: " ! connbytes 10 connbytes mode avgpkt connbytes direction reply"},
	{opts: "! --connbytes 10:20 --connbytes-dir both --connbytes-mode bytes",
		save: " ! --connbytes 10:20 --connbytes-mode bytes --connbytes-dir both", listN: " ! connbytes 10:20 connbytes mode bytes connbytes direction both"},
	{opts: "--connbytes :10 --connbytes-dir both --connbytes-mode bytes",
		save: " --connbytes 0:10 --connbytes-mode bytes --connbytes-dir both", listN: " connbytes 0:10 connbytes mode bytes connbytes direction both"},
	{opts: "--connbytes 10: --connbytes-dir both --connbytes-mode bytes",
		save: " --connbytes 10 --connbytes-mode bytes --connbytes-dir both", listN: " connbytes 10 connbytes mode bytes connbytes direction both"},
	{opts: "--connbytes 5:5 --connbytes-dir both --connbytes-mode bytes",
		save: " --connbytes 5:5 --connbytes-mode bytes --connbytes-dir both", listN: " connbytes 5:5 connbytes mode bytes connbytes direction both"},
	// "!" is stored by swapping the ends, which are equal here: lost.
	{opts: "! --connbytes 5:5 --connbytes-dir both --connbytes-mode bytes",
		save: " --connbytes 5:5 --connbytes-mode bytes --connbytes-dir both", listN: " connbytes 5:5 connbytes mode bytes connbytes direction both"},
	// An upper end of 0 is not printed.
	{opts: "--connbytes 0:0 --connbytes-dir both --connbytes-mode bytes",
		save: " --connbytes 0 --connbytes-mode bytes --connbytes-dir both", listN: " connbytes 0 connbytes mode bytes connbytes direction both"},
	{opts: "! --connbytes 0 --connbytes-dir both --connbytes-mode bytes",
		save: " ! --connbytes 0 --connbytes-mode bytes --connbytes-dir both", listN: " ! connbytes 0 connbytes mode bytes connbytes direction both"},
	{opts: "--connbytes 18446744073709551615 --connbytes-dir both --connbytes-mode bytes",
		save: " --connbytes 18446744073709551615 --connbytes-mode bytes --connbytes-dir both", listN: " connbytes 18446744073709551615 connbytes mode bytes connbytes direction both"},
	{opts: "--connbytes 0x10 --connbytes-mode packets --connbytes-dir reply",
		save: " --connbytes 16 --connbytes-mode packets --connbytes-dir reply", listN: " connbytes 16 connbytes mode packets connbytes direction reply"},
}

var connbytesErr = []errVector{
	{opts: "--connbytes 20:10 --connbytes-dir both --connbytes-mode bytes", err: "20 should be less than 10"},
	{opts: "--connbytes 18446744073709551616 --connbytes-dir both --connbytes-mode bytes", err: "--connbytes"},
	{opts: "--connbytes 10", err: `"--connbytes-dir" must be specified`},
	{opts: "--connbytes 10 --connbytes-dir both", err: `"--connbytes-mode" must be specified`},
	{opts: "--connbytes-dir both --connbytes-mode bytes", err: `"--connbytes" must be specified`},
	{opts: "--connbytes 1 --connbytes-dir BOTH --connbytes-mode bytes", err: "Unknown --connbytes-dir"},
	{opts: "--connbytes 1 --connbytes-dir bo --connbytes-mode bytes", err: "Unknown --connbytes-dir"},
	{opts: "--connbytes 1 --connbytes-dir both --connbytes-mode by", err: "Unknown --connbytes-mode"},
	{opts: "--connbytes 1 --connbytes 2 --connbytes-dir both --connbytes-mode bytes", err: "only one"},
}

func TestConnbytesFormats(t *testing.T) { runFmtVectors(t, "connbytes", connbytesFmt) }

func TestConnbytesErrors(t *testing.T) { runErrVectors(t, "connbytes", connbytesErr) }

// TestConnbytesMatch counts a connection's packets and bytes per
// direction (IP total lengths, this packet included) through every mode.
func TestConnbytesMatch(t *testing.T) {
	r := newCtRig(t)
	m := func(opts string) Match { return mustBuild(t, "connbytes", ruleAny, opts) }
	// 3 datagrams out (48, 48, 68 bytes), 1 back (128 bytes).
	r.pass(udpDgram(t, ipC, ipS, 7, 9, 20))
	r.pass(udpDgram(t, ipC, ipS, 7, 9, 20))
	r.pass(udpDgram(t, ipS, ipC, 9, 7, 100))
	c := r.track(udpDgram(t, ipC, ipS, 7, 9, 40))
	cases := []struct {
		opts string
		want bool
	}{
		{"--connbytes 3 --connbytes-dir original --connbytes-mode packets", true},
		{"--connbytes 4 --connbytes-dir original --connbytes-mode packets", false},
		{"--connbytes 4:4 --connbytes-dir both --connbytes-mode packets", true},
		{"--connbytes 1:1 --connbytes-dir reply --connbytes-mode packets", true},
		{"--connbytes 164:164 --connbytes-dir original --connbytes-mode bytes", true},
		{"--connbytes 292:292 --connbytes-dir both --connbytes-mode bytes", true},
		{"--connbytes 128:128 --connbytes-dir reply --connbytes-mode bytes", true},
		{"--connbytes 73:73 --connbytes-dir both --connbytes-mode avgpkt", true},     // 292/4
		{"--connbytes 54:54 --connbytes-dir original --connbytes-mode avgpkt", true}, // 164/3
		{"! --connbytes 3 --connbytes-dir original --connbytes-mode packets", false},
		{"! --connbytes 4 --connbytes-dir original --connbytes-mode packets", true},
		{"! --connbytes 2:3 --connbytes-dir original --connbytes-mode packets", false},
		{"! --connbytes 1:2 --connbytes-dir original --connbytes-mode packets", true},
		{"! --connbytes 3:3 --connbytes-dir original --connbytes-mode packets", true}, // "!" lost: matches 3
		{"! --connbytes 4:4 --connbytes-dir original --connbytes-mode packets", false},
		{"--connbytes 0:0 --connbytes-dir original --connbytes-mode bytes", false},
	}
	for _, tc := range cases {
		if got := m(tc.opts).Match(c); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.opts, got, tc.want)
		}
	}
	r.accept()
	// A new connection without replies: avgpkt of the reply direction
	// is 0 (no packets), and nothing matches without a connection.
	c = r.track(udpDgram(t, ipC, ipS, 8, 9, 0))
	if !m("--connbytes 0:0 --connbytes-dir reply --connbytes-mode avgpkt").Match(c) {
		t.Error("avgpkt of an empty direction is not 0")
	}
	r.accept()
	c = r.track(tcpSeg(t, ipC, ipS, 5, 6, "F", 1, 0, 0))
	if m("--connbytes 0 --connbytes-dir both --connbytes-mode packets").Match(c) ||
		m("! --connbytes 5 --connbytes-dir both --connbytes-mode packets").Match(c) {
		t.Error("connbytes matched a packet without a connection")
	}
}
