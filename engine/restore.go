package engine

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/qtables/qtables/matchers"
)

// LoadFile reads an iptables-save/iptables-restore file.
func LoadFile(path string) (*Ruleset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads rules in iptables-restore format: "*table" blocks of
// ":CHAIN POLICY [p:b]" lines and iptables commands ("-A ...", optionally
// prefixed by "[p:b]"), each ended by COMMIT. Counters in the file are kept
// (as iptables-restore --counters does): the file is the rule set's state.
// Errors name the file, line, column and offending token.
func Parse(name string, r io.Reader) (*Ruleset, error) {
	rs := &Ruleset{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	var cur *Table
	var curPos Pos
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		at := Pos{File: name, Line: lineNo, Col: 1}
		if line == "" || line[0] == '#' {
			continue
		}
		switch {
		case line[0] == '*':
			if cur != nil {
				return nil, &Error{Pos: at, Token: line, Msg: fmt.Sprintf("table %q opened before COMMIT of table %q", strings.TrimSpace(line[1:]), cur.Name)}
			}
			fields := strings.Fields(line[1:])
			if len(fields) == 0 {
				return nil, &Error{Pos: at, Token: line, Msg: "empty table name"}
			}
			t, err := NewTable(fields[0])
			if err != nil {
				return nil, &Error{Pos: Pos{name, lineNo, 2}, Token: fields[0], Msg: err.Error()}
			}
			cur, curPos = t, at
		case strings.TrimRight(line, "\r") == "COMMIT" && line == "COMMIT":
			if cur == nil {
				return nil, &Error{Pos: at, Token: line, Msg: "COMMIT outside a table block"}
			}
			if err := cur.Validate(); err != nil {
				if e, ok := err.(*Error); ok && e.Pos.File == "" {
					e.Pos = at
				}
				return nil, err
			}
			rs.replaceTable(cur)
			cur = nil
		case cur == nil:
			return nil, &Error{Pos: at, Token: firstWord(line), Msg: "expected a *table line (or a comment) outside a table block"}
		case line[0] == ':':
			if err := cur.parseChainLine(line, at); err != nil {
				return nil, err
			}
		default:
			if err := cur.parseRuleLine(line, at); err != nil {
				return nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if cur != nil {
		return nil, &Error{Pos: Pos{name, lineNo + 1, 1}, Msg: fmt.Sprintf("COMMIT expected: table %q opened at line %d is not committed", cur.Name, curPos.Line)}
	}
	rs.Link()
	return rs, nil
}

// Link lets the match instances of rs share work (matchers.Link): one
// automaton scans a packet for all string patterns, one flow table serves
// the application-layer matches. Parse calls it; a Ruleset built another
// way may call it once, before any Program compiled from it evaluates a
// packet. Unlinked matches give the same answers, each working alone.
func (rs *Ruleset) Link() {
	var ms []matchers.Match
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				for _, m := range r.Matches {
					ms = append(ms, m.Match)
				}
			}
		}
	}
	matchers.Link(ms, matchers.L7Config{})
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return s
}

func (rs *Ruleset) replaceTable(t *Table) {
	for i, x := range rs.Tables {
		if x.Name == t.Name {
			rs.Tables[i] = t
			return
		}
	}
	rs.Tables = append(rs.Tables, t)
}

// parseChainLine handles ":NAME POLICY [p:b]".
func (t *Table) parseChainLine(line string, at Pos) error {
	toks, err := tokenize(line[1:], Pos{at.File, at.Line, 2})
	if err != nil {
		return err
	}
	if len(toks) < 2 {
		return &Error{Pos: at, Token: line, Msg: "chain line needs a name and a policy (\":NAME POLICY [packets:bytes]\")"}
	}
	nameTok, polTok := toks[0], toks[1]
	var pk, by uint64
	hasCounters := false
	if len(toks) >= 3 {
		p, b, ok := parseBracketCounters(toks[2].text)
		if !ok {
			return errAt(toks[2], "invalid policy counters (want [packets:bytes])")
		}
		pk, by, hasCounters = p, b, true
	}
	if len(toks) > 3 {
		return errAt(toks[3], "unexpected text after chain counters")
	}
	c := t.Chain(nameTok.text)
	if c == nil {
		if polTok.text != "-" {
			return errAt(polTok, "can't set policy %q on user-defined chain %q (policy must be \"-\")", polTok.text, nameTok.text)
		}
		if clashesWithTarget(nameTok.text) {
			return errAt(nameTok, "chain name %q may not clash with target name", nameTok.text)
		}
		if _, err := t.AddChain(nameTok.text); err != nil {
			return errAt(nameTok, "%v", err)
		}
		return nil
	}
	if !c.Builtin {
		return errAt(nameTok, "chain %q declared twice", c.Name)
	}
	switch polTok.text {
	case "ACCEPT":
		c.Policy = matchers.Accept
	case "DROP":
		c.Policy = matchers.Drop
	default:
		return errAt(polTok, "bad built-in chain policy %q (ACCEPT or DROP)", polTok.text)
	}
	if hasCounters {
		c.Counters.Set(pk, by)
	}
	return nil
}

// parseBracketCounters parses "[p:b]".
func parseBracketCounters(s string) (uint64, uint64, bool) {
	if len(s) < 5 || s[0] != '[' || s[len(s)-1] != ']' {
		return 0, 0, false
	}
	ps, bs, ok := strings.Cut(s[1:len(s)-1], ":")
	if !ok {
		return 0, 0, false
	}
	p, err1 := strconv.ParseUint(ps, 10, 64)
	b, err2 := strconv.ParseUint(bs, 10, 64)
	return p, b, err1 == nil && err2 == nil
}

// parseRuleLine handles an iptables command inside a table block.
func (t *Table) parseRuleLine(line string, at Pos) error {
	toks, err := tokenize(line, at)
	if err != nil {
		return err
	}
	var pk, by uint64
	hasCounters := false
	if len(toks) > 0 && strings.HasPrefix(toks[0].text, "[") {
		p, b, ok := parseBracketCounters(toks[0].text)
		if !ok {
			return errAt(toks[0], "bad counters: need [packets:bytes]")
		}
		pk, by, hasCounters = p, b, true
		toks = toks[1:]
	}
	cmd, err := parseCommand(toks, t.Name, true)
	if err != nil {
		return err
	}
	if hasCounters && !cmd.SetCounters {
		cmd.SetCounters, cmd.Pkts, cmd.Bytes = true, pk, by
		for _, r := range cmd.Rules {
			r.Counters.Set(pk, by)
		}
	}
	if cmd.Kind == CmdList || cmd.Kind == CmdListRules {
		return errAt(cmd.cmdTok, "listing commands are not allowed in a rules file")
	}
	return t.apply(cmd)
}

// ParseCommand parses an iptables command line given as separate arguments
// (as a shell passes them), e.g. ["-t", "filter", "-A", "INPUT", "-j", "DROP"].
func ParseCommand(args []string) (*Command, error) {
	return parseCommand(argTokens(args, "<command line>"), "filter", false)
}
