package matchers

import (
	"errors"
	"fmt"
	"strings"
)

// The comment match (kernel xt_comment.c, iptables libxt_comment.c): it
// carries text and always matches.

func init() {
	RegisterMatch(&MatchExt{
		Name:    "comment",
		Options: []Option{{Name: "comment", Args: 1}},
		New:     func() MatchBuilder { return &commentBuilder{} },
	})
}

// maxComment is XT_MAX_COMMENT_LEN less the terminating NUL.
const maxComment = 255

// commentMatch holds the comment text.
type commentMatch struct {
	text string
}

type commentBuilder struct {
	m   commentMatch
	set bool
}

// Parse accepts 0..255 bytes. iptables 1.8.9 also accepts the empty
// comment (and saves it as ""); it silently cuts longer ones to 255 bytes,
// which qtables refuses as iptables 1.8.11 does.
func (b *commentBuilder) Parse(name string, args []string, _ bool) error {
	if name != "comment" {
		return fmt.Errorf("unknown option --%s", name)
	}
	if b.set {
		return errors.New("only one --comment allowed")
	}
	if len(args[0]) > maxComment {
		return fmt.Errorf("comment too long (%d bytes, max %d)", len(args[0]), maxComment)
	}
	b.m.text, b.set = args[0], true
	return nil
}

func (b *commentBuilder) Build(*Rule) (Match, error) {
	if !b.set {
		return nil, errors.New("option --comment must be specified")
	}
	m := b.m
	return &m, nil
}

// Match always reports true: a comment never affects matching.
func (m *commentMatch) Match(*Context) bool { return true }

// Save prints " --comment TEXT" quoted as xtables_save_string does.
func (m *commentMatch) Save(b *strings.Builder) {
	b.WriteString(" --comment ")
	SaveString(b, m.text)
}

// List prints " /* TEXT */" with the text as is.
func (m *commentMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" /* ")
	b.WriteString(m.text)
	b.WriteString(" */")
}
