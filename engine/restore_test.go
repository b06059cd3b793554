package engine

import (
	"bytes"
	"strings"
	"testing"
)

const sampleRules = `# a comment
*filter
:INPUT DROP [12:3456]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [100:20000]
:LOGDROP - [0:0]
:ACCT - [0:0]
[5:300] -A INPUT -i lo -j ACCEPT
-A INPUT -s 10.0.0.0/8 -j ACCT
-A INPUT -j LOGDROP
-A ACCT -d 10.9.9.9/32
-A LOGDROP -j DROP
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
`

func TestParseAndSaveRoundTrip(t *testing.T) {
	rs, err := Parse("rules", strings.NewReader(sampleRules))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rs.Save(&out, SaveOptions{Counters: true}); err != nil {
		t.Fatal(err)
	}
	// User chains print sorted by name; rules chain by chain in that order.
	want := `*filter
:INPUT DROP [12:3456]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [100:20000]
:ACCT - [0:0]
:LOGDROP - [0:0]
[5:300] -A INPUT -i lo -j ACCEPT
[0:0] -A INPUT -s 10.0.0.0/8 -j ACCT
[0:0] -A INPUT -j LOGDROP
[0:0] -A ACCT -d 10.9.9.9/32
[0:0] -A LOGDROP -j DROP
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
`
	if out.String() != want {
		t.Errorf("saved\n%s\nwant\n%s", out.String(), want)
	}
	// Parse then print is stable.
	rs2, err := Parse("again", strings.NewReader(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	var out2 bytes.Buffer
	rs2.Save(&out2, SaveOptions{Counters: true})
	if out2.String() != out.String() {
		t.Errorf("not stable:\n%s\nvs\n%s", out2.String(), out.String())
	}
}

func TestParseFileErrors(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
		col      int
		token    string
		msg      string
	}{
		{"nat", "*nat\nCOMMIT\n", 1, 2, "nat", "NAT"},
		{"no commit", "*filter\n-A INPUT -j DROP\n", 3, 1, "", "COMMIT expected"},
		{"unknown chain", "*filter\n-A NOPE -j DROP\nCOMMIT\n", 2, 4, "NOPE", "does not exist"},
		{"unknown target", "*filter\n-A INPUT -j NOPE\nCOMMIT\n", 2, 13, "NOPE", "couldn't load target"},
		{"goto builtin", "*filter\n-A INPUT -g FORWARD\nCOMMIT\n", 2, 13, "FORWARD", "built-in"},
		{"policy on user chain", "*filter\n:X ACCEPT [0:0]\nCOMMIT\n", 2, 4, "ACCEPT", "user-defined"},
		{"bad policy", "*filter\n:INPUT REJECT [0:0]\nCOMMIT\n", 2, 8, "REJECT", "bad built-in chain policy"},
		{"bad counters", "*filter\n[1:x] -A INPUT\nCOMMIT\n", 2, 1, "[1:x]", "bad counters"},
		{"indented comment", "*filter\n  # hi\nCOMMIT\n", 2, 3, "#", "bad argument"},
		{"rule outside table", "-A INPUT -j DROP\n", 1, 1, "-A", "outside a table"},
		{"commit with space", "*filter\nCOMMIT \n", 2, 1, "COMMIT", "bad argument"},
		{"loop", "*filter\n:A - [0:0]\n:B - [0:0]\n-A INPUT -j A\n-A A -j B\n-A B -j A\nCOMMIT\n", 6, 1, "", "loop"},
		{"unknown table", "*foo\nCOMMIT\n", 1, 2, "foo", "does not exist"},
	}
	for _, tt := range tests {
		_, err := Parse("f.rules", strings.NewReader(tt.in))
		if err == nil {
			t.Errorf("%s: accepted", tt.name)
			continue
		}
		e, ok := err.(*Error)
		if !ok {
			t.Errorf("%s: %T %v", tt.name, err, err)
			continue
		}
		if e.Pos.File != "f.rules" || e.Pos.Line != tt.line || e.Pos.Col != tt.col || e.Token != tt.token || !strings.Contains(e.Msg, tt.msg) {
			t.Errorf("%s: got %v (line %d col %d token %q); want line %d col %d token %q msg ~%q",
				tt.name, e, e.Pos.Line, e.Pos.Col, e.Token, tt.line, tt.col, tt.token, tt.msg)
		}
	}
}

func TestStarTableFlushes(t *testing.T) {
	in := "*filter\n:X - [0:0]\n-A INPUT -j X\nCOMMIT\n*filter\n-A INPUT -j DROP\nCOMMIT\n"
	rs, err := Parse("f", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rs.Save(&out, SaveOptions{})
	want := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}
