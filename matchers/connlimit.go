package matchers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/packet"
)

// The connlimit match (kernel xt_connlimit.c over nf_conncount.c,
// iptables libxt_connlimit.c revision 1). iptables 1.8.9 loads the xt
// match.
//
// The kernel does not count the conntrack table's entries per address.
// Each rule keeps its own lists, one per masked address (the key), of the
// original tuples of connections it has seen, and counts a list's length.
// What a packet does to its key's list depends on its connection
// (nf_conncount as in Linux 6.18 with the 2025-2026 fixes, measured with
// conformance's TestKernelStateFacts):
//
//   - A packet of an ASSURED connection is not added: the list is only
//     cleaned (see below) and counted. A packet without a connection
//     whose tuple names one in the table counts as that connection's. If
//     the cleaning empties the list the count is 0, and the packet is
//     dropped (hotdrop): so the last ACK of a connection that was its
//     key's only one, which moves it to TIME_WAIT, never passes such a
//     rule.
//   - Any other packet (the first of a connection, one without any, the
//     packets of a connection not assured yet, an ICMP error about one)
//     is added, unless it is listed already, and the list is cleaned on
//     the way.
//
// Cleaning looks every stored tuple up in the conntrack table and drops
// those no longer there (a connection whose first packet was dropped, one
// that expired or was deleted) and TCP connections in TIME_WAIT or CLOSE,
// at most 64 per call. Adding stops at the first listed tuple equal to
// the packet's, so the rest of the list stays as it is. A list is cleaned
// at most once per jiffy, though: a connection not yet confirmed that
// arrives in the jiffy of its list's last cleaning is appended without
// looking, duplicate or not (the kernel's "reduce unnecessary GC"; a
// burst of first packets counts their connections more than once).
// connlimitMatch reproduces all of this with the capture's clock at the
// kernel's HZ, so that qtables and the kernel count alike packet by
// packet.

func init() {
	RegisterMatch(&MatchExt{
		Name: "connlimit",
		Options: []Option{
			{Name: "connlimit-upto", Args: 1, Invert: true},
			{Name: "connlimit-above", Args: 1, Invert: true},
			{Name: "connlimit-mask", Args: 1},
			{Name: "connlimit-saddr"},
			{Name: "connlimit-daddr"},
		},
		New: func() MatchBuilder { return &connlimitBuilder{plen: 32} },
	})
}

// Kernel constants of nf_conncount.
const (
	// connlimitHZ is the kernel's tick rate (CONFIG_HZ of Debian's
	// kernels): lists are cleaned at most once per tick.
	connlimitHZ = 250
	// connlimitMaxCollect is CONNCOUNT_GC_MAX_COLLECT: a cleaning pass
	// stops after removing more than this many stale tuples.
	connlimitMaxCollect = 64
)

// connlimitMatch is xt_connlimit_info plus its counting state, which is
// per rule (per instance), as in the kernel.
type connlimitMatch struct {
	limit uint32
	// inv is XT_CONNLIMIT_INVERT: --connlimit-upto (count <= limit).
	inv   bool
	daddr bool
	plen  uint8
	data  *connCount
}

// Match is connlimit_mt: the key is the packet's source (or destination)
// address under the mask; the tuple counted is the connection's original
// tuple, or the packet's own when it has no connection. A packet whose
// tuple cannot be taken (a transport header too short for ports, a later
// fragment) is dropped (hotdrop).
//
// A count of 0 (no tuple, or a list emptied by its cleaning) drops the
// packet too.
func (m *connlimitMatch) Match(c *Context) bool {
	n := m.count(c)
	if n == 0 {
		c.Hotdrop = true
		return false
	}
	return (n > uint64(m.limit)) != m.inv
}

// count accounts the packet's connection and returns the count for its
// key, 0 when the packet has no tuple.
func (m *connlimitMatch) count(c *Context) uint64 {
	var p ccPacket
	if _, _, e := c.CtState(); e != nil {
		p.tuple, p.confirmed = e.Orig(), e.Confirmed()
		p.assured = e.Status()&conntrack.StatusAssured != 0
	} else {
		var ok bool
		if p.tuple, ok = packetTuple(c.Pkt); !ok {
			return 0
		}
		// The tuple of a connection the packet is INVALID in: the kernel
		// looks it up and treats the packet as that connection's.
		if c.CtTable != nil {
			var e conntrack.Entry
			if e, _, p.confirmed = c.CtTable.Lookup(p.tuple, c.Now); p.confirmed {
				p.assured = e.Status()&conntrack.StatusAssured != 0
			}
		}
	}
	a := c.Pkt.Src
	if m.daddr {
		a = c.Pkt.Dst
	}
	a4 := a.As4()
	key := binary.BigEndian.Uint32(a4[:]) & prefixMask32(int(m.plen))
	return m.data.count(c.CtTable, key, &p, c.Now)
}

// ccPacket is what nf_conncount takes from a packet: the tuple to count
// and whether its connection is confirmed and assured.
type ccPacket struct {
	tuple              conntrack.Tuple
	confirmed, assured bool
}

// packetTuple is nf_ct_get_tuplepr on the packet: addresses, protocol and
// the protocol's words as the conntrack table keys them. It fails where
// the kernel's does: a later fragment, fewer than 4 transport bytes for a
// protocol with ports, fewer than 8 for ICMP.
func packetTuple(v *packet.View) (conntrack.Tuple, bool) {
	if v == nil || v.Family != 4 || v.FragOff() != 0 {
		return conntrack.Tuple{}, false
	}
	var sport, dport uint16
	l4 := v.L4
	switch v.Proto {
	case packet.ProtoTCP, packet.ProtoUDP, protoUDPLite, protoDCCP, protoSCTP:
		if len(l4) < 4 {
			return conntrack.Tuple{}, false
		}
		sport, dport = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case packet.ProtoICMP:
		if len(l4) < 8 {
			return conntrack.Tuple{}, false
		}
		sport, dport = binary.BigEndian.Uint16(l4[4:6]), uint16(l4[0])<<8|uint16(l4[1])
	}
	return conntrack.TupleFrom(v.Src, v.Dst, v.Proto, sport, dport), true
}

// Save prints " --connlimit-above|--connlimit-upto N --connlimit-mask P
// --connlimit-saddr|--connlimit-daddr".
func (m *connlimitMatch) Save(b *strings.Builder) {
	if m.inv {
		b.WriteString(" --connlimit-upto ")
	} else {
		b.WriteString(" --connlimit-above ")
	}
	b.WriteString(strconv.FormatUint(uint64(m.limit), 10))
	b.WriteString(" --connlimit-mask ")
	b.WriteString(strconv.Itoa(int(m.plen)))
	if m.daddr {
		b.WriteString(" --connlimit-daddr")
	} else {
		b.WriteString(" --connlimit-saddr")
	}
}

// List prints " #conn src|dst/P > N" (or "<= N" for upto).
func (m *connlimitMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" #conn ")
	if m.daddr {
		b.WriteString("dst/")
	} else {
		b.WriteString("src/")
	}
	b.WriteString(strconv.Itoa(int(m.plen)))
	if m.inv {
		b.WriteString(" <= ")
	} else {
		b.WriteString(" > ")
	}
	b.WriteString(strconv.FormatUint(uint64(m.limit), 10))
}

type connlimitBuilder struct {
	limit    uint32
	inv      bool
	limitOpt string
	plen     uint8
	addrOpt  string
	seen     map[string]bool
}

func (b *connlimitBuilder) Parse(name string, args []string, invert bool) error {
	if b.seen[name] {
		return fmt.Errorf("connlimit: option \"--%s\" can only be used once", name)
	}
	switch name {
	case "connlimit-upto", "connlimit-above":
		if b.limitOpt != "" {
			return errors.New(`connlimit: option "--connlimit-upto" cannot be used together with "--connlimit-above"`)
		}
		v, err := ParseUint(args[0], 0xffffffff)
		if err != nil {
			return fmt.Errorf("connlimit: bad value for option \"--%s\", or out of range (0-4294967295)", name)
		}
		b.limit, b.limitOpt = uint32(v), name
		// upto is "above, inverted"; "!" flips it back.
		b.inv = (name == "connlimit-upto") != invert
	case "connlimit-mask":
		m, ok := parsePlenMask(args[0])
		if !ok {
			return errors.New(`connlimit: bad value for option "--connlimit-mask", neither a valid network mask nor valid CIDR (0-32)`)
		}
		b.plen = uint8(bits.LeadingZeros32(^m))
	case "connlimit-saddr", "connlimit-daddr":
		if b.addrOpt != "" {
			return errors.New(`connlimit: option "--connlimit-saddr" cannot be used together with "--connlimit-daddr"`)
		}
		b.addrOpt = name
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	if b.seen == nil {
		b.seen = map[string]bool{}
	}
	b.seen[name] = true
	return nil
}

func (b *connlimitBuilder) Build(*Rule) (Match, error) {
	if b.limitOpt == "" {
		return nil, errors.New(`You must specify "--connlimit-above" or "--connlimit-upto"`)
	}
	return &connlimitMatch{limit: b.limit, inv: b.inv, daddr: b.addrOpt == "connlimit-daddr",
		plen: b.plen, data: newConnCount()}, nil
}

// ---- nf_conncount ----

// connCount is one rule's counting state: lists of tuples by key, split
// into independently locked shards so that workers counting different
// keys do not wait for each other.
type connCount struct {
	shards [connCountShards]ccShard
}

const connCountShards = 16

type ccShard struct {
	mu    sync.Mutex
	lists map[uint32]*ccList
	spare []*ccList // emptied lists, for reuse
	// trimAt is the number of lists at which the shard is next cleaned
	// as a whole (see trim).
	trimAt int
	_      [40]byte
}

// ccList is nf_conncount_list: the tuples of one key in insertion order,
// the jiffy of its last cleaning and its length then.
type ccList struct {
	conns       []ccConn
	lastGC      uint32
	lastGCCount int
}

type ccConn struct {
	tuple conntrack.Tuple
	added uint32 // jiffy
}

func newConnCount() *connCount {
	d := &connCount{}
	for i := range d.shards {
		d.shards[i].lists = map[uint32]*ccList{}
		d.shards[i].trimAt = 1024
	}
	return d
}

func jiffies(t time.Time) uint32 {
	return uint32(t.UnixNano() / (int64(time.Second) / connlimitHZ))
}

// count is count_tree: the number of connections under key after
// accounting p.
func (d *connCount) count(t *conntrack.Table, key uint32, p *ccPacket, now time.Time) uint64 {
	s := &d.shards[(key*0x9e3779b1)>>28]
	s.mu.Lock()
	defer s.mu.Unlock()
	j := jiffies(now)
	l, ok := s.lists[key]
	if !ok {
		// insert_tree: a new list holding this tuple, whatever the
		// packet.
		l = s.newList()
		s.lists[key] = l
		if len(s.lists) >= s.trimAt {
			s.trim(t, now, key)
		}
		l.conns = append(l.conns[:0], ccConn{p.tuple, j})
		l.lastGC, l.lastGCCount = j, 0
		return 1
	}
	switch {
	case p.confirmed && p.assured:
		// Not added: cleaned and counted. An emptied list stays (the
		// kernel frees it only while inserting another key that hashes
		// to its slot), so this packet counts 0.
		if len(l.conns) > 0 {
			l.gc(t, j, now)
		}
	default:
		l.add(t, &p.tuple, j, now, p.confirmed)
	}
	return uint64(len(l.conns))
}

func (s *ccShard) newList() *ccList {
	if n := len(s.spare); n > 0 {
		l := s.spare[n-1]
		s.spare = s.spare[:n-1]
		return l
	}
	return &ccList{}
}

// add is __nf_conncount_add: unless the list was cleaned in this jiffy
// (and has not grown by 64 since) and the connection is not confirmed,
// drop stale tuples and stop if tu is listed (and its connection alive);
// then append it.
func (l *ccList) add(t *conntrack.Table, tu *conntrack.Tuple, j uint32, now time.Time, confirmed bool) {
	if confirmed || j != l.lastGC || len(l.conns)-l.lastGCCount >= connlimitMaxCollect {
		collect := 0
		for i := 0; i < len(l.conns); {
			if collect > connlimitMaxCollect {
				break
			}
			c := &l.conns[i]
			alive, closed := lookupConn(t, &c.tuple, now)
			switch {
			case !alive:
				// Not in the table. The kernel keeps a tuple another CPU
				// added less than two jiffies ago (it may be about to be
				// confirmed); qtables evaluates each list under one
				// lock, so every such tuple is this caller's own.
				l.remove(i)
				collect++
				continue
			case c.tuple == *tu:
				return // already counted
			case closed:
				l.remove(i)
				collect++
				continue
			}
			i++
		}
		l.lastGC, l.lastGCCount = j, len(l.conns)
	}
	l.conns = append(l.conns, ccConn{*tu, j})
}

// gc is nf_conncount_gc_list: drop stale tuples; report an empty list.
func (l *ccList) gc(t *conntrack.Table, j uint32, now time.Time) bool {
	if j == l.lastGC {
		return false
	}
	collect := 0
	for i := 0; i < len(l.conns); {
		if alive, closed := lookupConn(t, &l.conns[i].tuple, now); !alive || closed {
			l.remove(i)
			collect++
			continue
		}
		if collect > connlimitMaxCollect {
			break
		}
		i++
	}
	l.lastGC, l.lastGCCount = j, len(l.conns)
	return len(l.conns) == 0
}

func (l *ccList) remove(i int) {
	l.conns = slices.Delete(l.conns, i, i+1)
}

// lookupConn reports whether the connection with tuple tu is in the table
// (confirmed and not expired), and whether it is a TCP connection in
// TIME_WAIT or CLOSE, which connlimit no longer counts. Without a table
// nothing is alive: every connection counts only itself.
func lookupConn(t *conntrack.Table, tu *conntrack.Tuple, now time.Time) (alive, closed bool) {
	if t == nil {
		return false, false
	}
	e, _, ok := t.Lookup(*tu, now)
	if !ok {
		return false, false
	}
	if e.Proto() == packet.ProtoTCP {
		st := e.TCPState()
		closed = st == conntrack.TCPTimeWait || st == conntrack.TCPClose
	}
	return true, closed
}

// trim cleans every list of the shard and frees the empty ones, so that
// the keys of connections long gone do not pile up. The kernel frees
// empty lists when cleaning the lists it passes while inserting a new key
// and in a worker it schedules then; qtables does it when a shard's list
// count doubles (from 1024), which a rule set with few keys never
// reaches. keep is the key being inserted.
func (s *ccShard) trim(t *conntrack.Table, now time.Time, keep uint32) {
	j := jiffies(now)
	for k, l := range s.lists {
		if k != keep && l.gc(t, j, now) {
			delete(s.lists, k)
			l.conns = l.conns[:0]
			s.spare = append(s.spare, l)
		}
	}
	s.trimAt = max(1024, 2*len(s.lists))
}
