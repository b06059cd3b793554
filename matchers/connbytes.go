package matchers

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/qtables/qtables/conntrack"
)

// The connbytes match (kernel xt_connbytes.c connbytes_mt, iptables
// libxt_connbytes.c). iptables 1.8.9 loads the xt match (`nft list
// ruleset` displays "ct bytes ..."). The kernel module turns conntrack
// accounting on when it is loaded; qtables' table always accounts.

func init() {
	RegisterMatch(&MatchExt{
		Name: "connbytes",
		Options: []Option{
			{Name: "connbytes", Args: 1, Invert: true},
			{Name: "connbytes-dir", Args: 1},
			{Name: "connbytes-mode", Args: 1},
		},
		New: func() MatchBuilder { return &connbytesBuilder{} },
	})
}

// What connbytes counts and in which direction (xt_connbytes_what,
// xt_connbytes_direction).
const (
	cbPackets uint8 = iota
	cbBytes
	cbAvgPkt
)

const (
	cbOriginal uint8 = iota
	cbReply
	cbBoth
)

var (
	cbModeNames = [...]string{"packets", "bytes", "avgpkt"}
	cbDirNames  = [...]string{"original", "reply", "both"}
)

// connbytesMatch holds the kernel's xt_connbytes_info: "!" is stored by
// swapping from and to, and from > to then means "outside [to, from]".
type connbytesMatch struct {
	from, to  uint64
	what, dir uint8
}

// Match is connbytes_mt: the counter of the packet's connection (after
// this packet was accounted, at PREROUTING) inside [from, to], or, when
// from > to, below to or above from. No connection: no match.
func (m *connbytesMatch) Match(c *Context) bool {
	_, _, e := c.CtState()
	if e == nil {
		return false
	}
	var pkts, bytes uint64
	switch m.dir {
	case cbOriginal:
		pkts, bytes = e.Packets(conntrack.DirOriginal), e.Bytes(conntrack.DirOriginal)
	case cbReply:
		pkts, bytes = e.Packets(conntrack.DirReply), e.Bytes(conntrack.DirReply)
	default:
		pkts = e.Packets(conntrack.DirOriginal) + e.Packets(conntrack.DirReply)
		bytes = e.Bytes(conntrack.DirOriginal) + e.Bytes(conntrack.DirReply)
	}
	var what uint64
	switch m.what {
	case cbPackets:
		what = pkts
	case cbBytes:
		what = bytes
	default:
		if pkts != 0 {
			what = bytes / pkts
		}
	}
	if m.to >= m.from {
		return what >= m.from && what <= m.to
	}
	return what < m.to || what > m.from
}

type connbytesBuilder struct {
	m    connbytesMatch
	seen map[string]bool
}

func (b *connbytesBuilder) Parse(name string, args []string, invert bool) error {
	if err := once(&b.seen, name); err != nil {
		return fmt.Errorf("connbytes: %w", err)
	}
	arg := args[0]
	switch name {
	case "connbytes":
		v, n, err := parseUintRange(arg, math.MaxUint64)
		if err != nil {
			return fmt.Errorf("connbytes: bad value for option \"--connbytes\": %w", err)
		}
		from, to := v[0], uint64(math.MaxUint64)
		if n == 2 {
			to = v[1]
		}
		if to < from {
			return fmt.Errorf("%d should be less than %d", from, to)
		}
		if invert {
			from, to = to, from
		}
		b.m.from, b.m.to = from, to
	case "connbytes-dir":
		i := indexOf(cbDirNames[:], arg)
		if i < 0 {
			return fmt.Errorf("Unknown --connbytes-dir `%s'", arg)
		}
		b.m.dir = uint8(i)
	case "connbytes-mode":
		i := indexOf(cbModeNames[:], arg)
		if i < 0 {
			return fmt.Errorf("Unknown --connbytes-mode `%s'", arg)
		}
		b.m.what = uint8(i)
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return nil
}

func indexOf(names []string, s string) int {
	for i, n := range names {
		if n == s {
			return i
		}
	}
	return -1
}

func (b *connbytesBuilder) Build(*Rule) (Match, error) {
	for _, o := range []string{"connbytes", "connbytes-dir", "connbytes-mode"} {
		if !b.seen[o] {
			return nil, fmt.Errorf("connbytes: option \"--%s\" must be specified", o)
		}
	}
	if b.m.what > cbAvgPkt || b.m.dir > cbBoth {
		return nil, errors.New("connbytes: bad mode or direction")
	}
	m := b.m
	return &m, nil
}

// writeRange appends " [!] PREFIX FROM[:TO]" as libxt_connbytes'
// print_from_to does: from > to is the inverted form (printed with "!"
// and the ends swapped back), and TO is left out when it is 0 or the
// maximum, so "0:0" prints as "0" and "! --connbytes 5:5", whose
// swapped ends are equal, loses its "!".
func (m *connbytesMatch) writeRange(b *strings.Builder, prefix string) {
	from, to := m.from, m.to
	if from > to {
		b.WriteString(" !")
		from, to = to, from
	}
	b.WriteString(prefix)
	b.WriteString(strconv.FormatUint(from, 10))
	if to != 0 && to != math.MaxUint64 {
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(to, 10))
	}
}

// Save prints " [!] --connbytes A[:B] --connbytes-mode M --connbytes-dir D".
func (m *connbytesMatch) Save(b *strings.Builder) {
	m.writeRange(b, " --connbytes ")
	b.WriteString(" --connbytes-mode ")
	b.WriteString(cbModeNames[m.what])
	b.WriteString(" --connbytes-dir ")
	b.WriteString(cbDirNames[m.dir])
}

// List prints " [!] connbytes A[:B] connbytes mode M connbytes direction D".
func (m *connbytesMatch) List(b *strings.Builder, _ bool) {
	m.writeRange(b, " connbytes ")
	b.WriteString(" connbytes mode ")
	b.WriteString(cbModeNames[m.what])
	b.WriteString(" connbytes direction ")
	b.WriteString(cbDirNames[m.dir])
}
