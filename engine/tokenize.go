package engine

import (
	"fmt"
	"strings"
)

// token is one word of a command line with where it starts.
type token struct {
	text string
	pos  Pos
}

// tokenize splits a rules-file line as iptables-restore does: on spaces,
// tabs and newlines; double quotes group (and are removed); inside quotes a
// backslash makes the next character literal; outside quotes backslash and
// single quotes are ordinary characters.
func tokenize(line string, at Pos) ([]token, error) {
	var toks []token
	var cur strings.Builder
	inTok, inQuote, escaped := false, false, false
	start := 0
	for i := 0; i < len(line); i++ {
		c := line[i]
		if escaped {
			cur.WriteByte(c)
			escaped = false
			continue
		}
		if inQuote {
			switch c {
			case '\\':
				escaped = true
			case '"':
				inQuote = false
			default:
				cur.WriteByte(c)
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			if inTok {
				toks = append(toks, token{cur.String(), Pos{at.File, at.Line, at.Col + start}})
				cur.Reset()
				inTok = false
			}
			continue
		}
		if !inTok {
			inTok, start = true, i
		}
		if c == '"' {
			inQuote = true
			continue
		}
		cur.WriteByte(c)
	}
	if inQuote {
		return nil, &Error{Pos: Pos{at.File, at.Line, at.Col + start}, Token: line[start:], Msg: "unterminated double quote"}
	}
	if inTok {
		toks = append(toks, token{cur.String(), Pos{at.File, at.Line, at.Col + start}})
	}
	return toks, nil
}

// argTokens turns already split arguments (a shell command line) into
// tokens whose columns count in the arguments joined by single spaces.
func argTokens(args []string, file string) []token {
	toks := make([]token, len(args))
	col := 1
	for i, a := range args {
		toks[i] = token{a, Pos{file, 1, col}}
		col += len(a) + 1
	}
	return toks
}

func validChainName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty chain name")
	case len(name) > 28:
		return fmt.Errorf("chain name %q is too long (must be under 29 chars)", name)
	case name[0] == '-' || name[0] == '!':
		return fmt.Errorf("chain name %q must not start with '-' or '!'", name)
	case strings.ContainsAny(name, " \t\n"):
		return fmt.Errorf("chain name %q must not contain whitespace", name)
	}
	return nil
}
