package matchers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/qtables/qtables/packet"
)

// The pkttype match (kernel xt_pkttype.c pkttype_mt, iptables
// libxt_pkttype.c).

func init() {
	RegisterMatch(&MatchExt{
		Name:    "pkttype",
		Options: []Option{{Name: "pkt-type", Args: 1, Invert: true}},
		New:     func() MatchBuilder { return &pkttypeBuilder{} },
	})
}

// packetLoopback is PACKET_LOOPBACK, the class of looped-back multicast
// and broadcast frames, which the match reclassifies.
const packetLoopback = 5

// pktTypeNames is iptables' table in its order; -L and iptables-save print
// the first name of a type. "outgoing" is commented out in iptables (1.8.9
// refuses it: "Bad packet type 'outgoing'"), so it is not accepted here.
var pktTypeNames = [...]struct {
	name string
	typ  uint8
}{
	{"unicast", packet.PacketHost},
	{"broadcast", packet.PacketBroadcast},
	{"multicast", packet.PacketMulticast},
	{"otherhost", packet.PacketOtherHost},
	{"bcast", packet.PacketBroadcast},
	{"mcast", packet.PacketMulticast},
	{"host", packet.PacketHost},
}

// pkttypeMatch compares the link-layer packet class (skb->pkt_type).
type pkttypeMatch struct {
	typ uint8
	inv bool
}

type pkttypeBuilder struct {
	m   pkttypeMatch
	set bool
}

func (b *pkttypeBuilder) Parse(name string, args []string, invert bool) error {
	if name != "pkt-type" {
		return fmt.Errorf("unknown option --%s", name)
	}
	if b.set {
		return errors.New("only one --pkt-type allowed")
	}
	for _, n := range pktTypeNames {
		if equalFold(args[0], n.name) {
			b.m = pkttypeMatch{typ: n.typ, inv: invert}
			b.set = true
			return nil
		}
	}
	return fmt.Errorf("bad packet type %q", args[0])
}

func (b *pkttypeBuilder) Build(*Rule) (Match, error) {
	if !b.set {
		return nil, errors.New("option --pkt-type must be specified")
	}
	m := b.m
	return &m, nil
}

// Match is pkttype_mt: a looped-back frame counts as multicast when its
// IPv4 destination is multicast and as broadcast otherwise.
func (m *pkttypeMatch) Match(c *Context) bool {
	t := c.Pkt.PktType
	if t == packetLoopback {
		t = packet.PacketBroadcast
		if d := c.Pkt.Dst; d.Is4() && d.IsMulticast() {
			t = packet.PacketMulticast
		}
	}
	return (t == m.typ) != m.inv
}

// Save prints " [!] --pkt-type unicast".
func (m *pkttypeMatch) Save(b *strings.Builder) {
	writeInv(b, m.inv)
	b.WriteString(" --pkt-type ")
	m.writeName(b)
}

// List prints " PKTTYPE = unicast" or " PKTTYPE != unicast".
func (m *pkttypeMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" PKTTYPE ")
	if m.inv {
		b.WriteByte('!')
	}
	b.WriteString("= ")
	m.writeName(b)
}

func (m *pkttypeMatch) writeName(b *strings.Builder) {
	for _, n := range pktTypeNames {
		if n.typ == m.typ {
			b.WriteString(n.name)
			return
		}
	}
	b.WriteString(strconv.Itoa(int(m.typ)))
}
