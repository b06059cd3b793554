package matchers

import (
	"errors"
	"fmt"
	"strings"

	"github.com/qtables/qtables/conntrack"
)

// The state match (iptables libxt_conntrack.c's "state" alias).
//
// iptables 1.8.9 does not load the old xt_state module for -m state: it
// loads the conntrack match revision 3 with only a state mask and the
// XT_CONNTRACK_STATE_ALIAS flag (which makes it print as "state"), and
// `nft list ruleset` merely displays it as "ct state ...". So the kernel's
// semantics are xt_conntrack's conntrack_mt with --ctstate alone.

func init() {
	RegisterMatch(&MatchExt{
		Name:    "state",
		Options: []Option{{Name: "state", Args: 1, Invert: true}},
		New:     func() MatchBuilder { return &stateBuilder{} },
	})
}

// ctStates is a set of conntrack states as -m state and --ctstate name
// them. The bit order is the order iptables prints them in.
type ctStates uint8

const (
	stInvalid ctStates = 1 << iota
	stNew
	stRelated
	stEstablished
	stUntracked
	stSNAT
	stDNAT
)

// ctStateNames are the names in print order (bit i is ctStateNames[i]).
var ctStateNames = [...]string{"INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT"}

// ctStateParseOrder is the order in which iptables tries the names
// against an abbreviation (strncasecmp over the given length), so "E" is
// ESTABLISHED and "S" is SNAT. -m state knows only the first five.
var ctStateParseOrder = [...]ctStates{stInvalid, stNew, stEstablished, stRelated, stUntracked, stSNAT, stDNAT}

func (s ctStates) name() string {
	for i := range ctStateNames {
		if s == 1<<i {
			return ctStateNames[i]
		}
	}
	return ""
}

// parseCtStates parses a comma list of state names as libxt_conntrack's
// conntrack_ps_states (withNAT, for --ctstate) or state_parse_states
// does: each element may be any case-insensitive prefix of a name, tried
// in ctStateParseOrder; empty elements are refused.
func parseCtStates(arg string, withNAT bool) (ctStates, error) {
	badf := "Bad ctstate %q"
	if !withNAT {
		badf = "Bad state %q"
	}
	var set ctStates
	for rest := arg; ; {
		part, tail, more := strings.Cut(rest, ",")
		if !more && part == "" && !withNAT {
			return 0, errors.New(`"--state" requires a list of states with no spaces, e.g. ESTABLISHED,RELATED`)
		}
		bit := ctStates(0)
		if part != "" {
			for _, b := range ctStateParseOrder {
				if !withNAT && b >= stSNAT {
					break
				}
				if hasPrefixFold(b.name(), part) {
					bit = b
					break
				}
			}
		}
		if bit == 0 {
			// iptables names the rest of the list from the bad element on.
			return 0, fmt.Errorf(badf, rest)
		}
		set |= bit
		if !more {
			return set, nil
		}
		rest = tail
	}
}

// writeCtStates appends " NAME,NAME..." in print order.
func writeCtStates(b *strings.Builder, s ctStates) {
	sep := byte(' ')
	for i, n := range ctStateNames {
		if s&(1<<i) != 0 {
			b.WriteByte(sep)
			b.WriteString(n)
			sep = ','
		}
	}
}

// packetStates returns the state bits the kernel's conntrack_mt computes
// for the packet (only one of INVALID, NEW, ESTABLISHED, RELATED,
// UNTRACKED; SNAT and DNAT from the connection's status) and its
// connection, nil when it has none.
func packetStates(c *Context) (ctStates, conntrack.Dir, *conntrack.Entry) {
	info, dir, e := c.CtState()
	var s ctStates
	switch info {
	case conntrack.CtNew:
		s = stNew
	case conntrack.CtEstablished:
		s = stEstablished
	case conntrack.CtRelated:
		s = stRelated
	case conntrack.CtUntracked:
		s = stUntracked
	default:
		s = stInvalid
	}
	if e != nil {
		st := e.Status()
		if st&conntrack.StatusSrcNAT != 0 {
			s |= stSNAT
		}
		if st&conntrack.StatusDstNAT != 0 {
			s |= stDNAT
		}
	}
	return s, dir, e
}

// stateMatch is -m state [!] --state LIST.
type stateMatch struct {
	states ctStates
	inv    bool
}

type stateBuilder struct {
	m   stateMatch
	set bool
}

func (b *stateBuilder) Parse(name string, args []string, invert bool) error {
	if name != "state" {
		return fmt.Errorf("unknown option --%s", name)
	}
	if b.set {
		return errors.New(`option "--state" can only be used once`)
	}
	s, err := parseCtStates(args[0], false)
	if err != nil {
		return err
	}
	b.m, b.set = stateMatch{states: s, inv: invert}, true
	return nil
}

func (b *stateBuilder) Build(*Rule) (Match, error) {
	if !b.set {
		return nil, errors.New(`option "--state" must be specified`)
	}
	m := b.m
	return &m, nil
}

// Match is conntrack_mt with only a state mask: the packet's one state
// bit is in the list, XOR the inversion.
func (m *stateMatch) Match(c *Context) bool {
	s, _, _ := packetStates(c)
	return (s&m.states != 0) != m.inv
}

// Save prints " [!] --state LIST".
func (m *stateMatch) Save(b *strings.Builder) {
	writeInv(b, m.inv)
	b.WriteString(" --state")
	writeCtStates(b, m.states)
}

// List prints " [!] state LIST".
func (m *stateMatch) List(b *strings.Builder, _ bool) {
	writeInv(b, m.inv)
	b.WriteString(" state")
	writeCtStates(b, m.states)
}
