package matchers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The ttl match (kernel ipt_ttl.c ttl_mt, iptables libipt_ttl.c).

func init() {
	RegisterMatch(&MatchExt{
		Name: "ttl",
		Options: []Option{
			{Name: "ttl-eq", Args: 1, Invert: true},
			{Name: "ttl-lt", Args: 1},
			{Name: "ttl-gt", Args: 1},
		},
		New: func() MatchBuilder { return &ttlBuilder{} },
	})
}

// TTL comparison modes, IPT_TTL_EQ.. in the kernel's numbering.
const (
	ttlEq uint8 = iota
	ttlNe       // "! --ttl-eq"
	ttlLt
	ttlGt
)

// ttlMatch compares the IPv4 TTL with a value.
type ttlMatch struct {
	mode, ttl uint8
}

type ttlBuilder struct {
	m    ttlMatch
	name string // the option given, "" until one is
}

func (b *ttlBuilder) Parse(name string, args []string, invert bool) error {
	var mode uint8
	switch name {
	case "ttl-eq":
		mode = ttlEq
		if invert {
			mode = ttlNe
		}
	case "ttl-lt":
		mode = ttlLt
	case "ttl-gt":
		mode = ttlGt
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	if invert && mode != ttlNe {
		return fmt.Errorf("--%s %w", name, ErrInvert)
	}
	if b.name != "" {
		if b.name == name {
			return fmt.Errorf("only one --%s allowed", name)
		}
		return fmt.Errorf("--%s cannot be used together with --%s", name, b.name)
	}
	v, err := ParseUint(args[0], 0xff)
	if err != nil {
		return fmt.Errorf("--%s: %w", name, err)
	}
	b.m = ttlMatch{mode: mode, ttl: uint8(v)}
	b.name = name
	return nil
}

func (b *ttlBuilder) Build(*Rule) (Match, error) {
	if b.name == "" {
		return nil, errors.New("you must specify one of --ttl-eq, --ttl-lt, --ttl-gt")
	}
	m := b.m
	return &m, nil
}

// Match is ttl_mt.
func (m *ttlMatch) Match(c *Context) bool {
	t := c.Pkt.TTL
	switch m.mode {
	case ttlEq:
		return t == m.ttl
	case ttlNe:
		return t != m.ttl
	case ttlLt:
		return t < m.ttl
	default:
		return t > m.ttl
	}
}

var ttlSave = [...]string{ttlEq: " --ttl-eq ", ttlNe: " ! --ttl-eq ", ttlLt: " --ttl-lt ", ttlGt: " --ttl-gt "}
var ttlList = [...]string{ttlEq: "==", ttlNe: "!=", ttlLt: "<", ttlGt: ">"}

// Save prints " --ttl-eq N", " ! --ttl-eq N", " --ttl-lt N" or " --ttl-gt N".
func (m *ttlMatch) Save(b *strings.Builder) {
	b.WriteString(ttlSave[m.mode])
	b.WriteString(strconv.Itoa(int(m.ttl)))
}

// List prints " TTL match TTL == N" (or !=, <, >).
func (m *ttlMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" TTL match TTL ")
	b.WriteString(ttlList[m.mode])
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(int(m.ttl)))
}
