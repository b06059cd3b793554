package matchers

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// tgtBuild builds target name from its option words the way the rule parser
// does: "!" inverts the next option, each option takes Option.Args words,
// the table restriction of the registration is applied, then Build.
func tgtBuild(name string, r Rule, argv ...string) (Target, error) {
	ext, ok := LookupTarget(name)
	if !ok {
		return nil, fmt.Errorf("no target %s", name)
	}
	if r.Table != "" && ext.Tables != nil {
		found := false
		for _, t := range ext.Tables {
			found = found || t == r.Table
		}
		if !found {
			return nil, fmt.Errorf("%s: not valid in table %s", name, r.Table)
		}
	}
	b := ext.New()
	invert := false
	for i := 0; i < len(argv); i++ {
		w := argv[i]
		if w == "!" {
			invert = true
			continue
		}
		if !strings.HasPrefix(w, "--") {
			return nil, fmt.Errorf("bad argument %q", w)
		}
		opt, ok := FindOption(ext.Options, w[2:])
		if !ok {
			return nil, fmt.Errorf("unknown option %q", w)
		}
		if i+opt.Args >= len(argv) {
			return nil, fmt.Errorf("option %q requires %d arguments", w, opt.Args)
		}
		args := argv[i+1 : i+1+opt.Args]
		i += opt.Args
		if err := b.Parse(opt.Name, args, invert); err != nil {
			return nil, err
		}
		invert = false
	}
	return b.Build(&r)
}

// tgtSaveList returns the Save text and both List texts of t.
func tgtSaveList(t Target) (save, listN, list string) {
	var b strings.Builder
	t.Save(&b)
	save = b.String()
	b.Reset()
	t.List(&b, true)
	listN = b.String()
	b.Reset()
	t.List(&b, false)
	return save, listN, b.String()
}

// tgtCase is one input of a target with what the installed iptables 1.8.9
// (nf_tables) printed for it: iptables-save's text after "-j NAME", and
// `iptables -L -n` / `iptables -L` text after the destination column.
// An empty listN means the input must be refused.
type tgtCase struct {
	rule  Rule
	args  string
	argv  []string // the option words, when args cannot carry them
	save  string
	listN string
	list  string // "" = same as listN
}

func (tc tgtCase) words() []string {
	if tc.argv != nil {
		return tc.argv
	}
	return tgtSplit(tc.args)
}

func tgtSplit(s string) []string {
	if s == "" {
		return nil
	}
	// Double-quoted words keep their spaces (prefixes).
	var out []string
	for s != "" {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			break
		}
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			out = append(out, s[1:1+end])
			s = s[2+end:]
			continue
		}
		w, rest, _ := strings.Cut(s, " ")
		out = append(out, w)
		s = rest
	}
	return out
}

func tgtRunCases(t *testing.T, name string, cases []tgtCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			tg, err := tgtBuild(name, tc.rule, tc.words()...)
			if tc.listN == "" {
				if err == nil {
					t.Fatalf("-j %s %s: accepted, iptables refuses it", name, tc.args)
				}
				return
			}
			if err != nil {
				t.Fatalf("-j %s %s: %v", name, tc.args, err)
			}
			save, listN, list := tgtSaveList(tg)
			if save != tc.save {
				t.Errorf("Save = %q, iptables-save prints %q", save, tc.save)
			}
			if listN != tc.listN {
				t.Errorf("List(-n) = %q, iptables -L -n prints %q", listN, tc.listN)
			}
			want := tc.list
			if want == "" {
				want = tc.listN
			}
			if list != want {
				t.Errorf("List = %q, iptables -L prints %q", list, want)
			}
		})
	}
}

// markCases were checked against iptables-save / iptables -L[ -n] 1.8.9.
var markCases = []tgtCase{
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

func TestMARKSaveList(t *testing.T) { tgtRunCases(t, "MARK", markCases) }

func TestMARKNoOptionError(t *testing.T) {
	_, err := tgtBuild("MARK", Rule{})
	if !errors.Is(err, errMarkNoOption) {
		t.Fatalf("-j MARK: err = %v, want %v", err, errMarkNoOption)
	}
	_, err = tgtBuild("MARK", Rule{}, "!", "--set-mark", "1")
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
		tg, err := tgtBuild("MARK", Rule{}, tgtSplit(tc.args)...)
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

func TestTgtStrtoul(t *testing.T) {
	tests := []struct {
		in   string
		v    uint64
		rest string
		ok   bool
	}{
		{"0", 0, "", true},
		{"10", 10, "", true},
		{"0x1F", 31, "", true},
		{"0X1f/", 31, "/", true},
		{"017", 15, "", true},
		{"08", 0, "8", true}, // octal 0, then garbage
		{"0x", 0, "x", true}, // strtoul reads the 0 only
		{" \t7", 7, "", true},
		{"+7", 7, "", true},
		{"-0", 0, "-0", false},
		{" -1", 0, " -1", false},
		{"", 0, "", false},
		{"x", 0, "x", false},
		{"4294967295", 4294967295, "", true},
		{"4294967296", 0, "", false},
		{"99999999999999999999999", 0, "", false},
		{"1:2", 1, ":2", true},
	}
	for _, tc := range tests {
		v, rest, ok := tgtStrtoul(tc.in, 0xffffffff)
		if ok != tc.ok || ok && (v != tc.v || rest != tc.rest) {
			t.Errorf("tgtStrtoul(%q) = %d, %q, %v; want %d, %q, %v", tc.in, v, rest, ok, tc.v, tc.rest, tc.ok)
		}
	}
}

func BenchmarkMARKApply(b *testing.B) {
	tg, err := tgtBuild("MARK", Rule{}, "--set-xmark", "0x10/0xf0")
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

// TestTgtAgainstIptables replays every case of the target tables through
// the installed iptables in a throwaway network namespace and compares
// iptables-save and iptables -L [-n] with Save and List; refused cases must
// fail there too. It changes system state (creates and deletes a netns),
// so it runs only as root with QTABLES_NETNS_TESTS=1.
func TestTgtAgainstIptables(t *testing.T) {
	if os.Getenv("QTABLES_NETNS_TESTS") != "1" || os.Geteuid() != 0 {
		t.Skip("set QTABLES_NETNS_TESTS=1 and run as root to compare with the installed iptables")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("iptables not installed")
	}
	ns := fmt.Sprintf("qt-tgt-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	in := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		return string(out), err
	}
	lastLine := func(s string) string {
		lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
		return lines[len(lines)-1]
	}
	builtin := map[string]bool{"PREROUTING": true, "INPUT": true, "FORWARD": true, "OUTPUT": true, "POSTROUTING": true}
	for _, g := range []struct {
		name  string
		cases []tgtCase
	}{{"MARK", markCases}, {"LOG", logCases}, {"REJECT", rejectCases}, {"NFQUEUE", nfqueueCases}} {
		for _, tc := range g.cases {
			table, chain := tc.rule.Table, tc.rule.Chain
			if table == "" {
				table = "filter"
			}
			if chain == "" {
				chain = "INPUT"
			}
			if !builtin[chain] {
				in("iptables", "-t", table, "-N", chain)
			}
			args := []string{"-t", table, "-A", chain}
			protoSave := ""
			if tc.rule.Proto != 0 {
				p := map[uint8]string{6: "tcp", 17: "udp"}[tc.rule.Proto]
				if tc.rule.InvProto {
					args = append(args, "!")
					protoSave = " !"
				}
				args = append(args, "-p", p)
				protoSave += " -p " + p
			}
			args = append(append(args, "-j", g.name), tc.words()...)
			desc := strings.Join(args, " ")
			out, err := in(append([]string{"iptables"}, args...)...)
			if tc.listN == "" {
				if err == nil {
					t.Errorf("%s: the installed iptables accepts it, the test expects a refusal", desc)
					in("iptables", "-t", table, "-F", chain)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: iptables refuses it: %v: %s", desc, err, out)
				continue
			}
			tg, err := tgtBuild(g.name, tc.rule, tc.words()...)
			if err != nil {
				t.Errorf("%s: %v", desc, err)
				continue
			}
			save, listN, list := tgtSaveList(tg)
			dump, _ := in("iptables-save", "-t", table)
			want := "-A " + chain + protoSave + " -j " + g.name + save
			found := false
			for _, l := range strings.Split(dump, "\n") {
				if strings.HasPrefix(l, "-A "+chain+" ") {
					found = true
					if l != want {
						t.Errorf("%s:\niptables-save: %q\n        ours: %q", desc, l, want)
					}
				}
			}
			if !found {
				t.Errorf("%s: no rule in iptables-save output:\n%s", desc, dump)
			}
			for _, l := range []struct{ flag, want string }{{"-n", listN}, {"", list}} {
				largs := []string{"iptables", "-t", table, "-L", chain}
				if l.flag != "" {
					largs = append(largs, l.flag)
				}
				out, _ := in(largs...)
				line := lastLine(out)
				// Our text starts with its own space; the column before it
				// is padded with spaces, so one more must precede it.
				if !strings.HasSuffix(line, " "+l.want) {
					t.Errorf("%s: iptables -L %s prints %q, ours %q", desc, l.flag, line, l.want)
				}
			}
			in("iptables", "-t", table, "-F", chain)
		}
	}
}
