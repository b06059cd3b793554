package engine

import (
	"strings"
	"testing"
)

// parseLine parses one "-A ..." line inside a filter table block.
func parseLine(t *testing.T, line string) (*Command, error) {
	t.Helper()
	toks, err := tokenize(line, Pos{"t", 1, 1})
	if err != nil {
		return nil, err
	}
	return parseCommand(toks, "filter", true)
}

func TestCoreSaveForms(t *testing.T) {
	// Input -> iptables-save form for iptables' own options (spec §3).
	tests := []struct{ in, want string }{
		{"-A INPUT -s 192.168.1.7 -i eth0 -j DROP", "-s 192.168.1.7/32 -i eth0 -j DROP"},
		{"-A INPUT -s 10.1.2.3/8 -j ACCEPT", "-s 10.0.0.0/8 -j ACCEPT"},
		{"-A INPUT -s 10.1.2.3/255.0.255.0", "-s 10.0.2.0/255.0.255.0"},
		{"-A INPUT ! -s 0.0.0.0/0", "! -s 0.0.0.0/0"},
		{"-A INPUT -s 0.0.0.0/0 -d 1.2.3.4/0", ""},
		{"-A FORWARD -d 1.2.3.4 -s 5.6.7.8", "-s 5.6.7.8/32 -d 1.2.3.4/32"},
		{"-A FORWARD -o ppp+ ! -i eth1", "! -i eth1 -o ppp+"},
		{"-A FORWARD -i +", ""},
		{"-A FORWARD ! -i +", "! -i +"},
		{"-A INPUT -p TCP", "-p tcp"},
		{"-A INPUT -p 6", "-p tcp"},
		{"-A INPUT -p 58", "-p ipv6-icmp"},
		{"-A INPUT -p 47", "-p gre"}, // iptables 1.8.9 prints the /etc/protocols name
		{"-A INPUT ! -p udp -f", "! -p udp -f"},
		{"-A INPUT ! -f -p icmp", "-p icmp ! -f"},
		{"-A INPUT -p all", ""},
		{"-A INPUT -j RETURN", "-j RETURN"},
		{"-A INPUT -jDROP", "-j DROP"},
		{"-A INPUT --source=1.1.1.1 --jump ACCEPT", "-s 1.1.1.1/32 -j ACCEPT"},
		{"-A INPUT --src 1.1.1.1 --dst 2.2.2.2", "-s 1.1.1.1/32 -d 2.2.2.2/32"},
		{"-A INPUT -s 1.2.3.4/0", ""},
	}
	for _, tt := range tests {
		cmd, err := parseLine(t, tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if len(cmd.Rules) != 1 {
			t.Errorf("%q: %d rules", tt.in, len(cmd.Rules))
			continue
		}
		if got := cmd.Rules[0].String(); got != tt.want {
			t.Errorf("%q: saved as %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCommaListsExpand(t *testing.T) {
	cmd, err := parseLine(t, "-A INPUT -s 1.1.1.1,2.2.2.0/24 -d 3.3.3.3,4.4.4.4 -j DROP")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range cmd.Rules {
		got = append(got, r.String())
	}
	want := []string{
		"-s 1.1.1.1/32 -d 3.3.3.3/32 -j DROP",
		"-s 1.1.1.1/32 -d 4.4.4.4/32 -j DROP",
		"-s 2.2.2.0/24 -d 3.3.3.3/32 -j DROP",
		"-s 2.2.2.0/24 -d 4.4.4.4/32 -j DROP",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("expanded to\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in      string
		col     int
		token   string
		msgPart string
	}{
		{"-A INPUT -s 1.1.1.1 -s 2.2.2.2", 21, "-s", "multiple -s"},
		{"-A INPUT ! ! -s 1.1.1.1", 12, "!", "multiple consecutive !"},
		{"-A INPUT -s 1.1.1.1 !", 21, "!", "nothing appropriate"},
		{"-A INPUT ! -m comment", 10, "!", "unexpected ! flag before --match"},
		{"-A INPUT ! -j DROP", 10, "!", "cannot have !"},
		{"-A INPUT -s 1.1.1.1,2.2.2.2 ! -d 3.3.3.3", 13, "1.1.1.1,2.2.2.2", "! not allowed with multiple"},
		{"-A INPUT -s 300.1.1.1", 13, "300.1.1.1", "not found"},
		{"-A INPUT -s 1.1.1.1/33", 13, "1.1.1.1/33", "invalid mask"},
		{"-A INPUT -p foo", 13, "foo", "unknown protocol"},
		{"-A INPUT ! -p all", 15, "all", "never match"},
		{"-A INPUT -o eth0", 13, "eth0", "can't use -o with INPUT"},
		{"-A OUTPUT -i eth0", 14, "eth0", "can't use -i with OUTPUT"},
		{"-A INPUT -i abcdefghijklmnop", 13, "abcdefghijklmnop", "shorter than 16"},
		{"-A INPUT -m nosuchmatch", 13, "nosuchmatch", "not implemented by qtables"},
		{"-A INPUT --nosuch 1", 10, "--nosuch", "unknown option"},
		{"-A INPUT -A OUTPUT", 10, "-A", "cannot use -A with -A"},
		{"-A INPUT junk", 10, "junk", "bad argument"},
		{"-A INPUT -j ACCEPT -g X", 20, "-g", "cannot use -j with -g"},
		{"-A INPUT -s", 10, "-s", "requires an argument"},
		{"-N X -s 1.1.1.1", 6, "-s", "illegal option \"-s\" with this command (-N)"},
		{"-S -n", 4, "-n", "illegal option"},
		{"-D INPUT -c 1 2 -j DROP", 10, "-c", "illegal option"},
	}
	for _, tt := range tests {
		_, err := parseLine(t, tt.in)
		if err == nil {
			t.Errorf("%q: no error", tt.in)
			continue
		}
		e, ok := err.(*Error)
		if !ok {
			t.Errorf("%q: error %T %v", tt.in, err, err)
			continue
		}
		if e.Pos.Col != tt.col || e.Token != tt.token || !strings.Contains(e.Msg, tt.msgPart) {
			t.Errorf("%q: got col %d token %q msg %q; want col %d token %q msg containing %q",
				tt.in, e.Pos.Col, e.Token, e.Msg, tt.col, tt.token, tt.msgPart)
		}
	}
}

func TestTokenize(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`-A X -m comment --comment "a b"`, []string{"-A", "X", "-m", "comment", "--comment", "a b"}},
		{`--comment "say \"hi\" \\ ok"`, []string{"--comment", `say "hi" \ ok`}},
		{`--comment it's\here`, []string{"--comment", `it's\here`}},
		{"a\tb  c", []string{"a", "b", "c"}},
		{`x"y z"w`, []string{"xy zw"}},
	}
	for _, tt := range tests {
		toks, err := tokenize(tt.in, Pos{})
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		var got []string
		for _, tk := range toks {
			got = append(got, tk.text)
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("%q: got %q want %q", tt.in, got, tt.want)
		}
	}
	if _, err := tokenize(`a "b`, Pos{}); err == nil {
		t.Error("unterminated quote accepted")
	}
}

func TestBundledShortOptions(t *testing.T) {
	cmd, err := ParseCommand([]string{"-nvxL", "INPUT", "--line-numbers"})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Kind != CmdList || cmd.Chain != "INPUT" || !cmd.Numeric || !cmd.Verbose || !cmd.Exact || !cmd.LineNumbers {
		t.Errorf("got %+v", cmd)
	}
	cmd, err = ParseCommand([]string{"-t", "mangle", "-D", "PREROUTING", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Kind != CmdDelete || cmd.Table != "mangle" || cmd.RuleNum != 3 || len(cmd.Rules) != 0 {
		t.Errorf("got %+v", cmd)
	}
	cmd, err = ParseCommand([]string{"-I", "INPUT", "-s", "1.2.3.4", "-j", "DROP"})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.RuleNum != 1 || len(cmd.Rules) != 1 {
		t.Errorf("-I without number: got %+v", cmd)
	}
}

func TestUnimplementedExtensionsNamed(t *testing.T) {
	for _, tt := range []struct{ line, token, msg string }{
		{"-A INPUT -j SNAT --to-source 1.1.1.1", "SNAT", "target extension SNAT is not implemented"},
		{"-A INPUT -m geoip --src-cc FR", "geoip", "match extension \"geoip\" is not implemented"},
	} {
		_, err := parseLine(t, tt.line)
		e, ok := err.(*Error)
		if !ok || e.Token != tt.token || !strings.Contains(e.Msg, tt.msg) {
			t.Errorf("%q: got %v, want token %q and %q", tt.line, err, tt.token, tt.msg)
		}
	}
}
