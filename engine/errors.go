package engine

import "fmt"

// Error is a rule-language error at a position: it prints as
// FILE:LINE:COL: message (near "TOKEN"), the form editors and CI logs link.
type Error struct {
	Pos   Pos
	Token string // the offending token, if any
	Msg   string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s:%d:%d: %s", e.Pos.File, e.Pos.Line, e.Pos.Col, e.Msg)
	if e.Token != "" {
		s += fmt.Sprintf(" (at %q)", e.Token)
	}
	return s
}

func errAt(t token, format string, args ...any) *Error {
	return &Error{Pos: t.pos, Token: t.text, Msg: fmt.Sprintf(format, args...)}
}
