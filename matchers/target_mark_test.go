package matchers

import (
	"errors"
	"testing"
)

// markCases were checked against iptables-save / iptables -L[ -n] 1.8.9.
var markCases = []targetCase{
	{args: "--set-mark 1", save: " --set-xmark 0x1/0xffffffff", listN: " MARK set 0x1"},
	{args: "--set-xmark 0x0", save: " --set-xmark 0x0/0xffffffff", listN: " MARK and 0x0"},
	{args: "--or-mark 0x4", save: " --set-xmark 0x4/0x4", listN: " MARK or 0x4"},
	{args: "--and-mark 0xff", save: " --set-xmark 0x0/0xffffff00", listN: " MARK and 0xff"},
	{args: "--xor-mark 2", save: " --set-xmark 0x2/0x0", listN: " MARK xor 0x2"},
	{args: "--set-mark 0x10/0xf0", save: " --set-xmark 0x10/0xf0", listN: " MARK xset 0x10/0xf0"},
	{args: "--set-xmark 0x10/0xf0", save: " --set-xmark 0x10/0xf0", listN: " MARK xset 0x10/0xf0"},
	{args: "--set-mark 0xffffffff", save: " --set-xmark 0xffffffff/0xffffffff", listN: " MARK or 0xffffffff"},
	{args: "--set-xmark 0/0", save: " --set-xmark 0x0/0x0", listN: " MARK and 0xffffffff"},
	{args: "--set-xmark 5/0", save: " --set-xmark 0x5/0x0", listN: " MARK xor 0x5"},
	{args: "--set-mark 0/0", save: " --set-xmark 0x0/0x0", listN: " MARK and 0xffffffff"},
	{args: "--set-mark 0x3/0xff", save: " --set-xmark 0x3/0xff", listN: " MARK xset 0x3/0xff"},
	{args: "--and-mark 0", save: " --set-xmark 0x0/0xffffffff", listN: " MARK and 0x0"},
	{args: "--and-mark 0xffffffff", save: " --set-xmark 0x0/0x0", listN: " MARK and 0xffffffff"},
	{args: "--or-mark 0", save: " --set-xmark 0x0/0x0", listN: " MARK and 0xffffffff"},
	{args: "--xor-mark 0", save: " --set-xmark 0x0/0x0", listN: " MARK and 0xffffffff"},
	{args: "--set-mark 010", save: " --set-xmark 0x8/0xffffffff", listN: " MARK set 0x8"},
	{args: "--set-mark +1", save: " --set-xmark 0x1/0xffffffff", listN: " MARK set 0x1"},
	{rule: Rule{Table: "nat"}, args: "--set-mark 1", save: " --set-xmark 0x1/0xffffffff", listN: " MARK set 0x1"},
	{rule: Rule{Table: "mangle"}, args: "--set-mark 1", save: " --set-xmark 0x1/0xffffffff", listN: " MARK set 0x1"},
	// Refused by iptables.
	{args: ""},
	{args: "--set-mark 1/"},
	{args: "--set-mark /1"},
	{args: "--set-mark 0x100000000"},
	{args: "--set-mark 4294967296"},
	{args: "--set-mark -1"},
	{args: "--set-mark 08"},
	{args: "--set-mark 1x"},
	{args: "--set-mark 0b1"},
	{args: "--set-mark 1_0"},
	{args: "--and-mark 1/2"},
	{args: "--or-mark 1/2"},
	{args: "--xor-mark 1/2"},
	{args: "--set-mark 1 --or-mark 2"},
	{args: "--set-mark 1 --set-mark 2"},
	{args: "--set-xmark 1 --set-mark 2"},
	{args: "--set-mark 1 ! --or-mark 2"},
	{args: "! --set-mark 1"},
}

func TestMARKSaveList(t *testing.T) { runTargetCases(t, "MARK", markCases) }

func TestMARKNoOptionError(t *testing.T) {
	_, err := buildTarget("MARK", Rule{})
	if !errors.Is(err, errMarkNoOption) {
		t.Fatalf("-j MARK: err = %v, want %v", err, errMarkNoOption)
	}
	_, err = buildTarget("MARK", Rule{}, "!", "--set-mark", "1")
	if !errors.Is(err, ErrInvert) {
		t.Fatalf("! --set-mark: err = %v, want ErrInvert", err)
	}
}

// TestMARKApply checks the spec's table: the effect of each option on a
// starting mark, computed from the option's meaning, not from Value/Mask.
func TestMARKApply(t *testing.T) {
	const old = 0x12345678
	tests := []struct {
		args string
		want uint32
	}{
		{"--set-mark 1", 1},
		{"--set-mark 0", 0},
		{"--set-mark 0xab/0xff", old&^0xff | 0xab},
		{"--set-mark 0x100/0xff", old&^0x1ff | 0x100}, // bits of the value are cleared too
		{"--set-xmark 0xab/0xff", old&^0xff ^ 0xab},
		{"--set-xmark 0x0", 0},
		{"--set-xmark 0xf0/0x0", old ^ 0xf0},
		{"--and-mark 0xff00", old & 0xff00},
		{"--or-mark 0x80000001", old | 0x80000001},
		{"--xor-mark 0xffff", old ^ 0xffff},
	}
	for _, tc := range tests {
		tg, err := buildTarget("MARK", Rule{}, splitArgs(tc.args)...)
		if err != nil {
			t.Fatalf("%s: %v", tc.args, err)
		}
		c := &Context{Mark: old}
		if v := tg.Apply(c); v != Continue {
			t.Errorf("%s: verdict %v, want CONTINUE", tc.args, v)
		}
		if c.Mark != tc.want {
			t.Errorf("%s: mark %#x -> %#x, want %#x", tc.args, uint32(old), c.Mark, tc.want)
		}
		if len(c.Events) != 0 {
			t.Errorf("%s: events %v", tc.args, c.Events)
		}
	}
}

// TestTargetBuildersRefuseInvert: each target builder refuses "!" on its
// own, without relying on the rule parser's check of Option.Invert.
func TestTargetBuildersRefuseInvert(t *testing.T) {
	for _, name := range []string{"MARK", "LOG", "NFQUEUE", "REJECT"} {
		ext, ok := LookupTarget(name)
		if !ok {
			t.Fatalf("%s not registered", name)
		}
		for _, o := range ext.Options {
			args := make([]string, o.Args)
			for i := range args {
				args[i] = "1"
			}
			if err := ext.New().Parse(o.Name, args, true); !errors.Is(err, ErrInvert) {
				t.Errorf("%s ! --%s: err = %v, want ErrInvert", name, o.Name, err)
			}
		}
	}
}

func BenchmarkMARKApply(b *testing.B) {
	tg, err := buildTarget("MARK", Rule{}, "--set-xmark", "0x10/0xf0")
	if err != nil {
		b.Fatal(err)
	}
	c := &Context{Mark: 0x1234}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tg.Apply(c)
	}
}
