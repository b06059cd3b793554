package matchers

import "testing"

var markFmt = []fmtVector{
	{opts: "--mark 4294967295", save: " --mark 0xffffffff", listN: " mark match 0xffffffff"},
	{opts: "--mark 0xffffffff/0xffffffff", save: " --mark 0xffffffff", listN: " mark match 0xffffffff"},
	{opts: "! --mark 0x1/0xff", save: " ! --mark 0x1/0xff", listN: " mark match ! 0x1/0xff"},
	{opts: "--mark 0x0/0xff0", save: " --mark 0x0/0xff0", listN: " mark match 0x0/0xff0"},
	{opts: "--mark 0x3/0x1", save: " --mark 0x3/0x1", listN: " mark match 0x3/0x1"},
	{opts: "--mark 010", save: " --mark 0x8", listN: " mark match 0x8"},
	{opts: "! --mark 5", save: " ! --mark 0x5", listN: " mark match ! 0x5"},
	{opts: "--mark 0xABC/0", save: " --mark 0xabc/0x0", listN: " mark match 0xabc/0x0"},
}

var markErr = []errVector{
	{opts: "--mark 4294967296", err: "bad mark value"},
	{opts: "--mark -1", err: "bad mark value"},
	{opts: `--mark ""`, err: "bad mark value"},
	{opts: "--mark 1/2/3", err: "trailing garbage"},
	{opts: "--mark 5/", err: "bad mark mask"},
	{opts: "--mark /5", err: "bad mark value"},
	{opts: "--mark 1/4294967296", err: "bad mark mask"},
	{opts: "--mark 1_0", err: "trailing garbage"},
	{opts: "", err: "--mark must be specified"},
}

func TestMarkFormats(t *testing.T) { runFmtVectors(t, "mark", markFmt) }

func TestMarkErrors(t *testing.T) { runErrVectors(t, "mark", markErr) }

func TestMarkMatch(t *testing.T) {
	cases := []struct {
		opts string
		mark uint32
		want bool
	}{
		{"--mark 0x1", 1, true},
		{"--mark 0x1", 0x101, false},
		{"--mark 0x1/0xff", 0x101, true},
		{"! --mark 0x1/0xff", 0x101, false},
		{"! --mark 0x1/0xff", 0x102, true},
		{"--mark 0x3/0x1", 3, false}, // value is not masked at parse time
		{"--mark 0/0", 0xdeadbeef, true},
		{"--mark 0", 0, true},
	}
	for _, tc := range cases {
		m := mustBuild(t, "mark", ruleAny, tc.opts)
		c := ctxFor(pkt{proto: 17, l4: udpHdr(1, 2)}.view())
		c.Mark = tc.mark
		if got := m.Match(c); got != tc.want {
			t.Errorf("%s on mark %#x = %v", tc.opts, tc.mark, got)
		}
	}
}
