package matchers

import "testing"

var ttlFmt = []fmtVector{
	{opts: "--ttl-eq 5", save: " --ttl-eq 5", listN: " TTL match TTL == 5"},
	{opts: "! --ttl-eq 5", save: " ! --ttl-eq 5", listN: " TTL match TTL != 5"},
	{opts: "--ttl-lt 5", save: " --ttl-lt 5", listN: " TTL match TTL < 5"},
	{opts: "--ttl-gt 5", save: " --ttl-gt 5", listN: " TTL match TTL > 5"},
	{opts: "--ttl-eq 0x10", save: " --ttl-eq 16", listN: " TTL match TTL == 16"},
	{opts: "--ttl-eq 0", save: " --ttl-eq 0", listN: " TTL match TTL == 0"},
	{opts: "--ttl-lt 0", save: " --ttl-lt 0", listN: " TTL match TTL < 0"},
	{opts: "--ttl-gt 255", save: " --ttl-gt 255", listN: " TTL match TTL > 255"},
}

var ttlErr = []errVector{
	{opts: "--ttl-eq 256", err: "out of range (0-255)"},
	{opts: "--ttl-eq -1", err: "out of range (0-255)"},
	{opts: `--ttl-eq ""`, err: "out of range (0-255)"},
	{opts: "", err: "you must specify one of --ttl-eq, --ttl-lt, --ttl-gt"},
	{opts: "--ttl-eq 1 --ttl-lt 2", err: "--ttl-lt cannot be used together with --ttl-eq"},
	{opts: "! --ttl-lt 3", err: "cannot be inverted"},
	{opts: "--ttl-gt 1 --ttl-gt 2", err: "only one --ttl-gt"},
}

func TestTTLFormats(t *testing.T) { runFmtVectors(t, "ttl", ttlFmt) }

func TestTTLErrors(t *testing.T) { runErrVectors(t, "ttl", ttlErr) }

func TestTTLMatch(t *testing.T) {
	cases := []struct {
		opts string
		ttl  uint8
		want bool
	}{
		{"--ttl-eq 64", 64, true},
		{"--ttl-eq 64", 63, false},
		{"! --ttl-eq 64", 63, true},
		{"! --ttl-eq 64", 64, false},
		{"--ttl-lt 2", 1, true},
		{"--ttl-lt 2", 2, false},
		{"--ttl-gt 254", 255, true},
		{"--ttl-gt 254", 254, false},
		{"--ttl-lt 0", 0, false},
	}
	for _, tc := range cases {
		m := mustBuild(t, "ttl", ruleAny, tc.opts)
		if got := m.Match(ctxFor(pkt{proto: 17, ttl: tc.ttl, l4: udpHdr(1, 2)}.view())); got != tc.want {
			t.Errorf("%s on TTL %d = %v", tc.opts, tc.ttl, got)
		}
	}
}
