package matchers

import "testing"

// connmarkFmt were checked against iptables-save / iptables -L[ -n] 1.8.9.
var connmarkFmt = []fmtVector{
	{opts: "--mark 0x1", save: " --mark 0x1", listN: " connmark match  0x1"},
	{opts: "! --mark 0x1/0xf", save: " ! --mark 0x1/0xf", listN: " connmark match ! 0x1/0xf"},
	{opts: "--mark 0/0xffffffff", save: " --mark 0x0", listN: " connmark match  0x0"},
	{opts: "--mark 0xffffffff/0xffffffff", save: " --mark 0xffffffff", listN: " connmark match  0xffffffff"},
	{opts: "--mark 0xffffffff/0", save: " --mark 0xffffffff/0x0", listN: " connmark match  0xffffffff/0x0"},
	{opts: "--mark 010", save: " --mark 0x8", listN: " connmark match  0x8"},
}

var connmarkErr = []errVector{
	{opts: "--mark 1/2/3", err: "trailing garbage"},
	{opts: "--mark 4294967296", err: "bad mark value"},
	{opts: "", err: "must be specified"},
}

func TestConnmarkFormats(t *testing.T) { runFmtVectors(t, "connmark", connmarkFmt) }

func TestConnmarkErrors(t *testing.T) { runErrVectors(t, "connmark", connmarkErr) }

// TestConnmarkAndCONNMARK sets, saves and restores marks on connections
// of the table and reads them back with -m connmark, in the same
// traversal and on later packets of the connection.
func TestConnmarkAndCONNMARK(t *testing.T) {
	r := newCtRig(t)
	tg := func(opts string) Target {
		t.Helper()
		x, err := buildTarget("CONNMARK", ruleAny, splitArgs(opts)...)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	m := func(opts string) Match { return mustBuild(t, "connmark", ruleAny, opts) }

	// First packet: the connection is not confirmed yet, its mark is set
	// all the same and survives the confirmation.
	c := r.track(udpDgram(t, ipC, ipS, 1000, 53, 8))
	if !m("--mark 0").Match(c) || m("! --mark 0").Match(c) {
		t.Fatal("new connection: mark is not 0")
	}
	tg("--set-mark 0x12/0xff").Apply(c)
	if c.CtMark != 0x12 || !m("--mark 0x2/0xf").Match(c) {
		t.Fatalf("after --set-mark 0x12/0xff: CtMark %#x", c.CtMark)
	}
	if c.CtMarkSet {
		t.Error("CtMarkSet set although the table holds the mark")
	}
	r.accept()
	c = r.track(udpDgram(t, ipS, ipC, 53, 1000, 8))
	if c.CtMark != 0x12 {
		t.Fatalf("reply sees ct mark %#x, want 0x12", c.CtMark)
	}
	// save: ct = (ct &^ ctmask) ^ (pkt & nfmask); restore: pkt = (pkt &^ nfmask) ^ (ct & ctmask).
	c.Mark = 0xabcd
	tg("--save-mark --nfmask 0xf0 --ctmask 0xff0").Apply(c)
	if want := uint32(0x12&^0xff0 ^ 0xabcd&0xf0); c.CtMark != want {
		t.Errorf("save-mark: ct mark %#x, want %#x", c.CtMark, want)
	}
	c.Mark = 0xffff0000
	tg("--restore-mark --mask 0xf").Apply(c)
	if want := uint32(0xffff0000&^0xf ^ 0xc2&0xf); c.Mark != want {
		t.Errorf("restore-mark: packet mark %#x, want %#x", c.Mark, want)
	}
	tg("--and-mark 0xf0").Apply(c)
	tg("--or-mark 0x100").Apply(c)
	tg("--xor-mark 0x3").Apply(c)
	if want := uint32((0xc2&0xf0 | 0x100) ^ 0x3); c.CtMark != want {
		t.Errorf("and/or/xor: ct mark %#x, want %#x", c.CtMark, want)
	}
	// Revision 2's shifts apply to the whole new mark (set) or to the
	// copied part (save, restore).
	tg("--set-xmark 0x10/0xffffffff --left-shift-mark 4").Apply(c)
	if c.CtMark != 0x100 {
		t.Errorf("set-xmark 0x10 << 4: %#x", c.CtMark)
	}
	c.Mark = 0xf00
	tg("--save-mark --right-shift-mark 8").Apply(c)
	if c.CtMark != 0xf {
		t.Errorf("save-mark >> 8: %#x", c.CtMark)
	}
	tg("--restore-mark --left-shift-mark 8 --ctmask 0xff --nfmask 0xff00").Apply(c)
	if c.Mark != 0xf00 {
		t.Errorf("restore-mark << 8: %#x", c.Mark)
	}
	r.accept()
	// The table holds the last mark.
	c = r.track(udpDgram(t, ipC, ipS, 1000, 53, 8))
	if c.CtMark != 0xf || !m("--mark 0xf").Match(c) {
		t.Errorf("next packet: ct mark %#x, want 0xf", c.CtMark)
	}
	r.accept()

	// No connection: connmark fails even negated; CONNMARK does nothing.
	c = r.track(tcpSeg(t, ipC, ipS, 5, 6, "F", 1, 0, 0))
	if m("--mark 0").Match(c) || m("! --mark 0").Match(c) || m("! --mark 1").Match(c) {
		t.Error("connmark matched a packet without a connection")
	}
	c.Mark = 7
	tg("--set-mark 5").Apply(c)
	tg("--restore-mark").Apply(c)
	if c.CtMark != 0 || c.Mark != 7 || c.CtMarkSet {
		t.Errorf("CONNMARK acted without a connection: ct %#x pkt %#x", c.CtMark, c.Mark)
	}
	r.drop()

	// A connection known only by its mark (the live daemon's kernel
	// connection): the change is flagged for writing back.
	ctx := Context{HasCt: true, CtMark: 1}
	tg("--or-mark 2").Apply(&ctx)
	if ctx.CtMark != 3 || !ctx.CtMarkSet {
		t.Errorf("kernel connection: CtMark %#x CtMarkSet %v", ctx.CtMark, ctx.CtMarkSet)
	}
}
