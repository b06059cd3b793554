package matchers

import (
	"strings"
	"testing"
)

var commentFmt = []fmtVector{
	{opts: "--comment foo", save: " --comment foo", listN: " /* foo */"},
	{opts: `--comment "allow ssh"`, save: ` --comment "allow ssh"`, listN: " /* allow ssh */"},
	{opts: `--comment a$b`, save: ` --comment "a$b"`, listN: " /* a$b */"},
	{opts: `--comment ta\tb`, save: ` --comment "ta\\tb"`, listN: ` /* ta\tb */`},
	{opts: `--comment a'b`, save: ` --comment "a\'b"`, listN: ` /* a'b */`},
	{opts: "--comment é", save: ` --comment "é"`, listN: " /* é */"},
	{opts: "--comment under_score-dash09", save: " --comment under_score-dash09", listN: " /* under_score-dash09 */"},
	// Accepted by iptables 1.8.9 and saved as "".
	{opts: `--comment ""`, save: ` --comment ""`, listN: " /*  */"},
	{opts: "--comment " + strings.Repeat("a", 255), save: " --comment " + strings.Repeat("a", 255),
		listN: " /* " + strings.Repeat("a", 255) + " */"},
}

var commentErr = []errVector{
	{opts: "--comment " + strings.Repeat("a", 256), err: "comment too long",
		dev: "iptables 1.8.9 silently truncates to 255 bytes; 1.8.11 (spec §9) refuses"},
	{opts: "", err: "--comment must be specified"},
	{opts: "--comment a --comment b", err: "only one --comment"},
	{opts: "! --comment a", err: "cannot be inverted"},
}

func TestCommentFormats(t *testing.T) { runFmtVectors(t, "comment", commentFmt) }

func TestCommentErrors(t *testing.T) { runErrVectors(t, "comment", commentErr) }

func TestCommentAlwaysMatches(t *testing.T) {
	m := mustBuild(t, "comment", ruleAny, "--comment x")
	c := ctxFor(pkt{proto: 6, fragWord: 1}.view())
	if !m.Match(c) || c.Hotdrop {
		t.Fatal("comment did not match, or dropped")
	}
}

func TestCommentQuotingRoundTrips(t *testing.T) {
	// What Save prints for a quoted comment must read back to the text
	// under the restore tokenizer's rules (backslash escapes the next byte).
	ext, _ := LookupMatch("comment")
	for _, s := range []string{`a"b'c\d`, "x y", "a\tb", "", "-"} {
		mb := ext.New()
		if err := mb.Parse("comment", []string{s}, false); err != nil {
			t.Fatal(err)
		}
		m, err := mb.Build(&ruleAny)
		if err != nil {
			t.Fatal(err)
		}
		saved, ok := strings.CutPrefix(saveOf(m), " --comment ")
		if got := unquoteRestore(saved); !ok || got != s {
			t.Errorf("comment %q saves as %s, reads back as %q", s, saveOf(m), got)
		}
	}
}

func unquoteRestore(s string) string {
	if !strings.HasPrefix(s, `"`) {
		return s
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		if s[i] == '\\' && i+1 < len(s)-1 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
