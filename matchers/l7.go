package matchers

// The flow table behind the application-layer matches (tls, http, dns over
// TCP, string --stream): matches the kernel does not have.
//
// These matches read a connection's first bytes, which arrive over several
// packets, so they need state per flow: each direction's opening bytes
// reassembled in order (l7Stream, up to a depth) and, once a parser has
// read them, the values the matches compare (server name, host, query
// names...). That state lives here, in a side table keyed by the flow's
// addresses, ports and protocol, rather than on the conntrack entry: the
// entry has an 8-byte slot, and the live daemon judges packets whose
// connections live in the kernel's table (Context.Ct is nil there). When
// the Context does carry a connection, its creation time tells a new
// connection on reused ports from the old one.
//
// Work per flow is bounded and done once: a direction's bytes are parsed
// when they grow, until each parser has decided (parsed, or found the
// bytes are not its protocol) or the depth is reached; the reassembly
// buffer then goes back to a pool and later packets only look the flow up
// and compare. Nothing allocates per packet once the table has reached
// its working size: records, buffers and value storage are recycled.
//
// Every packet that reaches one of the matches feeds the table, and
// feeding is idempotent (the same segment twice adds nothing), so two
// matches of one rule set may both see a packet, and a verifier may
// evaluate it twice. A packet that never reaches any of them (accepted by
// an earlier rule, say "-m state --state ESTABLISHED -j ACCEPT" before
// the tls rule) is not seen: the matches read what the rules let them
// read, as every iptables match does, so a rule set puts its L7 rules
// where the flows' first data packets reach them.
//
// Limits: a flow pushed out of a full table (L7Config.MaxFlows, least
// recently seen first) or idle longer than L7Config.Idle without a
// conntrack entry to vouch for it is forgotten, and its later packets,
// read mid-stream, see no values: they fail the matches. A DNS-over-TCP
// direction keeps its buffer until its depth is read, since more queries
// may follow.

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"time"

	"github.com/qtables/qtables/packet"
)

// Defaults of the flow table.
const (
	// DefaultL7Depth is how many bytes of each direction are reassembled
	// and searched: enough for a ClientHello with post-quantum key shares
	// (about 1.8 KiB) and the header section of a typical request.
	DefaultL7Depth = 4096
	// DefaultL7Flows bounds the flows one table keeps; beyond it the
	// least recently seen flow is forgotten.
	DefaultL7Flows = 1 << 16
	// DefaultL7Idle is how long a flow without packets is remembered when
	// no connection tracking tells when it ended.
	DefaultL7Idle = time.Hour
	// l7MaxDepth bounds the depth (and string --stream's --to).
	l7MaxDepth = 65535
)

// L7Config tunes a flow table; zero fields take the defaults.
type L7Config struct {
	// Depth is the number of bytes of each direction reassembled.
	Depth int
	// MaxFlows is the number of flows remembered.
	MaxFlows int
	// Idle is how long an idle flow is remembered without conntrack.
	Idle time.Duration
}

func (c L7Config) withDefaults() L7Config {
	if c.Depth <= 0 {
		c.Depth = DefaultL7Depth
	}
	c.Depth = min(c.Depth, l7MaxDepth)
	if c.MaxFlows <= 0 {
		c.MaxFlows = DefaultL7Flows
	}
	if c.Idle <= 0 {
		c.Idle = DefaultL7Idle
	}
	return c
}

// l7Need is a set of parsers a table runs.
type l7Need uint8

const (
	needTLS l7Need = 1 << iota
	needHTTP
	needDNS
	needStream
)

// l7User is a match that reads a flow table. Link gives all of a rule
// set's users one table; until then each has its own.
type l7User interface {
	Match
	l7Needs() l7Need
	// l7Stream returns the stream search of a string --stream match, nil
	// for the others.
	l7StreamSearch() *streamSearch
	setL7Table(t *l7Table)
}

// ---- the table ----

const (
	l7Shards    = 16
	l7ChunkBits = 8 // records per slab chunk: 256
)

// l7Table is a sharded flow table. Each shard has its own lock, index,
// record slab, LRU list and buffer pool, so packets of different flows
// rarely wait for each other.
type l7Table struct {
	cfg     L7Config
	needs   l7Need
	streams []*streamSearch
	seed    maphash.Seed
	shards  [l7Shards]l7Shard
}

type l7Shard struct {
	mu sync.Mutex
	// index finds a flow's record: open addressing with linear probing,
	// each slot the key's 32-bit hash (high half) and the record's index
	// + 1 (low half), 0 when empty; its length is a power of two, at
	// most half full, grown by doubling (from the stored hashes, without
	// touching records).
	index []uint64
	count int
	// chunks hold the records; a record's index never changes.
	chunks [][]l7Flow
	used   int32
	// head and tail of the LRU list (index+1), most recent at head.
	head, tail int32
	max        int32
	bufs       [][]byte // pooled reassembly buffers
	scratch    []byte   // for ClientHellos split over records
	// stats
	evicted uint64
}

// l7Key is a flow: the two endpoints in a canonical order.
type l7Key struct {
	a, b   [16]byte
	pa, pb uint16
	proto  uint8
}

// l7Span locates a value in a record's storage.
type l7Span struct{ off, n uint16 }

// l7Flow is one flow's record.
type l7Flow struct {
	key       l7Key
	hash      uint32
	ctCreated int64 // the connection's creation (Unix ns); 0 when unknown
	last      int64 // the last packet's time (Unix ns)
	prev      int32 // LRU links (index+1)
	next      int32
	dir       [2]l7Dir
	// found marks which parsers produced values: needTLS, needHTTP.
	found l7Need

	tls struct {
		version   uint16
		sni, alpn l7Span
		hasSNI    bool
	}
	http struct {
		method, target, host, ua l7Span
		hasHost, hasUA           bool
	}
	// vals holds the values of tls and http; qs the DNS questions, each
	// as qtype (2 bytes), name length (1), name.
	vals, qs []byte
	// streamState holds, per stream search and direction, the search
	// state; streamFound which searches found their pattern.
	streamState []int32
	streamFound []bool
}

// l7Dir is one direction of a flow.
type l7Dir struct {
	s l7Stream
	// pending are the parsers that have not decided on this direction.
	pending l7Need
	// done: nothing more is read from this direction (buffer returned).
	done bool
	// dnsOff is the offset of the next DNS message in the prefix.
	dnsOff int
}

// newL7Table returns a table running the parsers of needs and the stream
// searches.
func newL7Table(cfg L7Config, needs l7Need, streams []*streamSearch) *l7Table {
	cfg = cfg.withDefaults()
	for _, s := range streams {
		cfg.Depth = max(cfg.Depth, s.to)
	}
	t := &l7Table{cfg: cfg, needs: needs, streams: streams, seed: maphash.MakeSeed()}
	if len(streams) > 0 {
		t.needs |= needStream
	}
	per := int32(max(1, (cfg.MaxFlows+l7Shards-1)/l7Shards))
	for i := range t.shards {
		t.shards[i].max = per
	}
	return t
}

func (s *l7Shard) flow(i int32) *l7Flow { return &s.chunks[i>>l7ChunkBits][i&(1<<l7ChunkBits-1)] }

// l7KeyOf returns the flow key of v and the packet's direction in it.
func l7KeyOf(v *packet.View) (k l7Key, dir int) {
	src, dst := v.Src.As16(), v.Dst.As16()
	sp, dp := v.SrcPort, v.DstPort
	k.proto = v.Proto
	if c := compareEndpoint(src, sp, dst, dp); c <= 0 {
		k.a, k.pa, k.b, k.pb = src, sp, dst, dp
		return k, 0
	}
	k.a, k.pa, k.b, k.pb = dst, dp, src, sp
	return k, 1
}

func compareEndpoint(a [16]byte, pa uint16, b [16]byte, pb uint16) int {
	if x, y := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8]); x != y {
		return cmp.Compare(x, y)
	}
	if x, y := binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:]); x != y {
		return cmp.Compare(x, y)
	}
	return cmp.Compare(pa, pb)
}

// acquire feeds the TCP packet of c to its flow and returns the flow with
// its shard locked, or nil (nothing locked) when the packet has no TCP
// header to feed: a non-first fragment, a truncated header, not TCP. The
// caller reads the flow and unlocks the shard.
func (t *l7Table) acquire(c *Context) (*l7Shard, *l7Flow) {
	v := c.Pkt
	if v.Proto != packet.ProtoTCP || !v.HasTransport || v.FragOff() != 0 {
		return nil, nil
	}
	k, dir := l7KeyOf(v)
	h64 := maphash.Comparable(t.seed, k)
	h := uint32(h64) ^ uint32(h64>>32)
	sh := &t.shards[h64>>60%l7Shards]
	sh.mu.Lock()
	now := c.Now.UnixNano()
	var ct int64
	if _, _, e := c.CtState(); e != nil {
		ct = e.Created().UnixNano()
	}
	idx, ok := sh.find(k, h)
	var f *l7Flow
	if ok {
		f = sh.flow(idx)
		switch {
		case ct != 0 && f.ctCreated != 0 && ct != f.ctCreated:
			t.resetFlow(sh, f) // a new connection on the same ports
		case ct == 0 && now-f.last > int64(t.cfg.Idle):
			t.resetFlow(sh, f)
		}
		sh.touch(idx)
	} else {
		idx, f = t.newFlow(sh, k, h)
	}
	f.last = now
	if ct != 0 {
		f.ctCreated = ct
	}
	t.feed(sh, f, dir, v)
	return sh, f
}

// touch moves record idx to the head of the LRU list.
func (sh *l7Shard) touch(idx int32) {
	if sh.head == idx+1 {
		return
	}
	sh.unlink(idx)
	sh.pushFront(idx)
}

func (sh *l7Shard) unlink(idx int32) {
	f := sh.flow(idx)
	if f.prev != 0 {
		sh.flow(f.prev - 1).next = f.next
	} else {
		sh.head = f.next
	}
	if f.next != 0 {
		sh.flow(f.next - 1).prev = f.prev
	} else {
		sh.tail = f.prev
	}
	f.prev, f.next = 0, 0
}

func (sh *l7Shard) pushFront(idx int32) {
	f := sh.flow(idx)
	f.prev, f.next = 0, sh.head
	if sh.head != 0 {
		sh.flow(sh.head - 1).prev = idx + 1
	}
	sh.head = idx + 1
	if sh.tail == 0 {
		sh.tail = idx + 1
	}
}

// newFlow returns a fresh record for k at the head of the LRU list,
// recycling the least recently seen one when the shard is full.
func (t *l7Table) newFlow(sh *l7Shard, k l7Key, h uint32) (int32, *l7Flow) {
	var idx int32
	switch {
	case sh.used < sh.max:
		idx = sh.used
		if int(idx>>l7ChunkBits) == len(sh.chunks) {
			sh.chunks = append(sh.chunks, make([]l7Flow, 1<<l7ChunkBits))
		}
		sh.used++
		f := sh.flow(idx)
		if n := len(t.streams); n > 0 {
			f.streamState = make([]int32, 2*n)
			f.streamFound = make([]bool, n)
		}
	default:
		idx = sh.tail - 1
		sh.unlink(idx)
		sh.remove(sh.flow(idx).hash, idx)
		sh.evicted++
	}
	f := sh.flow(idx)
	t.resetFlow(sh, f)
	f.key, f.hash = k, h
	sh.insert(h, idx)
	sh.pushFront(idx)
	return idx, f
}

// find returns the record of key k, whose hash is h.
func (sh *l7Shard) find(k l7Key, h uint32) (int32, bool) {
	if sh.count == 0 {
		return 0, false
	}
	mask := uint32(len(sh.index) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		e := sh.index[i]
		if e == 0 {
			return 0, false
		}
		if uint32(e>>32) == h {
			if idx := int32(uint32(e)) - 1; sh.flow(idx).key == k {
				return idx, true
			}
		}
	}
}

// insert adds record idx with hash h, growing the index when it would
// be more than half full.
func (sh *l7Shard) insert(h uint32, idx int32) {
	if 2*(sh.count+1) > len(sh.index) {
		old := sh.index
		sh.index = make([]uint64, max(16, 2*len(old)))
		sh.count = 0
		for _, e := range old {
			if e != 0 {
				sh.place(e)
			}
		}
	}
	sh.place(uint64(h)<<32 | uint64(uint32(idx+1)))
}

func (sh *l7Shard) place(e uint64) {
	mask := uint32(len(sh.index) - 1)
	i := uint32(e>>32) & mask
	for sh.index[i] != 0 {
		i = (i + 1) & mask
	}
	sh.index[i] = e
	sh.count++
}

// remove deletes record idx (hash h) from the index, shifting back the
// entries after it so that no probe sequence breaks (no tombstones).
func (sh *l7Shard) remove(h uint32, idx int32) {
	mask := uint32(len(sh.index) - 1)
	want := uint64(h)<<32 | uint64(uint32(idx+1))
	i := h & mask
	for sh.index[i] != want {
		if sh.index[i] == 0 {
			return // not indexed (cannot happen)
		}
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		e := sh.index[j]
		if e == 0 {
			break
		}
		// e may move to the hole at i if its home is not in (i, j].
		home := uint32(e>>32) & mask
		if (j-home)&mask >= (j-i)&mask {
			sh.index[i] = e
			i = j
		}
	}
	sh.index[i] = 0
	sh.count--
}

// resetFlow forgets what f learnt, keeping its storage.
func (t *l7Table) resetFlow(sh *l7Shard, f *l7Flow) {
	for d := range f.dir {
		sh.release(&f.dir[d])
		f.dir[d] = l7Dir{}
	}
	prev, next, key := f.prev, f.next, f.key
	vals, qs, ss, sf := f.vals[:0], f.qs[:0], f.streamState, f.streamFound
	clear(ss)
	clear(sf)
	*f = l7Flow{key: key, prev: prev, next: next, vals: vals, qs: qs, streamState: ss, streamFound: sf}
}

// release returns a direction's buffer to the pool.
func (sh *l7Shard) release(d *l7Dir) {
	if d.s.buf != nil {
		sh.bufs = append(sh.bufs, d.s.buf)
		d.s.buf = nil
	}
}

// feed adds the packet's TCP data to direction dir of f and reads what
// grew.
func (t *l7Table) feed(sh *l7Shard, f *l7Flow, dir int, v *packet.View) {
	d := &f.dir[dir]
	seq := binary.BigEndian.Uint32(v.L4[4:])
	if v.TCPFlags&packet.TCPSyn != 0 {
		if v.TCPFlags&packet.TCPAck == 0 && (d.s.haveBase && !(d.s.synBase && d.s.base == seq+1)) {
			// A SYN opening a new connection on the same ports: what
			// was read belongs to the old one.
			t.resetFlow(sh, f)
			d = &f.dir[dir]
		}
		if d.done {
			return
		}
		d.s.syn(seq)
		seq++
	}
	if d.done || len(v.Payload) == 0 {
		return
	}
	if d.s.buf == nil {
		if n := len(sh.bufs); n > 0 {
			d.s.buf, sh.bufs = sh.bufs[n-1], sh.bufs[:n-1]
		} else {
			d.s.buf = make([]byte, t.cfg.Depth)
		}
		d.pending = t.needs &^ f.found
	}
	before := d.s.contiguous()
	if d.s.add(seq, v.Payload) == 0 {
		return
	}
	t.inspect(sh, f, dir, before)
}

// inspect runs the pending parsers and stream searches on direction dir,
// whose in-order prefix grew from before bytes.
func (t *l7Table) inspect(sh *l7Shard, f *l7Flow, dir, before int) {
	d := &f.dir[dir]
	p, final := d.s.prefix(), d.s.full()
	d.pending &^= f.found // the other direction may have decided
	if d.pending&needTLS != 0 {
		if sh.scratch == nil {
			sh.scratch = make([]byte, t.cfg.Depth)
		}
		var h tlsHello
		switch st := parseClientHello(p, sh.scratch, &h); {
		case st == parseOK:
			f.storeTLS(&h)
			d.pending &^= needTLS
		case st == parseInvalid || final:
			d.pending &^= needTLS
		}
	}
	if d.pending&needHTTP != 0 {
		var r httpRequest
		switch st := parseHTTPRequest(p, final, &r); {
		case st == parseOK:
			f.storeHTTP(&r)
			d.pending &^= needHTTP
		case st == parseInvalid || final:
			d.pending &^= needHTTP
		}
	}
	if d.pending&needDNS != 0 {
		t.readDNS(f, d, p, final)
	}
	if d.pending&needStream != 0 {
		searching := false
		for i, s := range t.streams {
			if f.streamFound[i] {
				continue
			}
			st := &f.streamState[2*i+dir]
			if s.feed(st, p, before) {
				f.streamFound[i] = true
			} else if len(p) < s.to {
				searching = true
			}
		}
		if !searching {
			d.pending &^= needStream
		}
	}
	if d.pending == 0 || final {
		d.done = true
		sh.release(d)
	}
}

// readDNS reads the DNS messages that became complete in the prefix.
func (t *l7Table) readDNS(f *l7Flow, d *l7Dir, p []byte, final bool) {
	for {
		msg, _, st := dnsTCPMessage(p[d.dnsOff:])
		if st == parseInvalid {
			d.pending &^= needDNS
			return
		}
		if st == parseMore {
			if final {
				d.pending &^= needDNS
			}
			return
		}
		var r dnsReader
		var h dnsHeader
		if !parseDNSMessage(msg, &r, &h) {
			d.pending &^= needDNS
			return
		}
		var q dnsQuestion
		for r.next(&q) {
			f.qs = binary.BigEndian.AppendUint16(f.qs, q.qtype)
			f.qs = append(f.qs, q.n)
			f.qs = append(f.qs, q.qname()...)
		}
		d.dnsOff += 2 + len(msg)
	}
}

// store copies b into the record's value storage.
func (f *l7Flow) store(b []byte) l7Span {
	off := len(f.vals)
	f.vals = append(f.vals, b...)
	return l7Span{uint16(off), uint16(len(b))}
}

func (f *l7Flow) val(s l7Span) []byte { return f.vals[s.off : s.off+s.n] }

func (f *l7Flow) storeTLS(h *tlsHello) {
	f.found |= needTLS
	f.tls.version = h.maxVersion
	f.tls.sni, f.tls.hasSNI = f.store(h.sni), h.hasSNI
	f.tls.alpn = f.store(h.alpn)
}

func (f *l7Flow) storeHTTP(r *httpRequest) {
	f.found |= needHTTP
	f.http.method = f.store(r.method)
	f.http.target = f.store(r.target)
	f.http.host, f.http.hasHost = f.store(r.host), r.hasHost
	f.http.ua, f.http.hasUA = f.store(r.userAgent), r.hasUA
}

// l7Question is one stored DNS question.
type l7Question struct {
	qtype uint16
	name  []byte
}

// nextQuestion returns the question at offset off of f.qs and the offset
// of the next; ok is false at the end.
func (f *l7Flow) nextQuestion(off int) (q l7Question, next int, ok bool) {
	if off+3 > len(f.qs) {
		return q, off, false
	}
	n := int(f.qs[off+2])
	q.qtype, q.name = binary.BigEndian.Uint16(f.qs[off:]), f.qs[off+3:off+3+n]
	return q, off + 3 + n, true
}

// l7Stats are a flow table's counters.
type l7Stats struct {
	Flows   int    // records in use
	Evicted uint64 // records recycled while still in use (table full)
}

func (t *l7Table) stats() l7Stats {
	var s l7Stats
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		s.Flows += sh.count
		s.Evicted += sh.evicted
		sh.mu.Unlock()
	}
	return s
}

// ---- linking the matches of a rule set ----

// Link prepares the matches of one rule set to share work; call it once
// on all of them after they are built and before any is used.
//
// The application-layer matches get one flow table configured by cfg, so
// that each flow is reassembled and parsed once however many matches read
// it; unlinked, each keeps a table of its own (correct, but each
// reassembles the flows it sees). The string matches (without --stream)
// are compiled into one automaton, so that a packet is scanned once
// however many patterns there are (multipattern.go). Link returns the
// number of matches linked.
func Link(ms []Match, cfg L7Config) int {
	linked := 0
	if set := linkStrings(ms); set != nil {
		linked = len(set.pats)
	}
	var users []l7User
	var needs l7Need
	var streams []*streamSearch
	for _, m := range ms {
		u, ok := m.(l7User)
		if !ok {
			continue
		}
		users = append(users, u)
		needs |= u.l7Needs()
		if s := u.l7StreamSearch(); s != nil {
			s.slot = len(streams)
			streams = append(streams, s)
		}
	}
	if len(users) == 0 {
		return linked
	}
	t := newL7Table(cfg, needs, streams)
	for _, u := range users {
		u.setL7Table(t)
	}
	return linked + len(users)
}

// ---- shared option parsing and printing ----

// namePattern is one entry of a --sni, --host or --qname list: a name,
// lower case, or with suffix set the ".example.com" of "*.example.com".
type namePattern struct {
	name   string
	suffix bool
}

// parseNameList parses NAME[,NAME...]: host names compared without regard
// to ASCII case, a trailing dot ignored; "*.suffix" matches any name with
// one or more labels before suffix (not suffix itself).
func parseNameList(opt, s string) ([]namePattern, error) {
	if s == "" {
		return nil, fmt.Errorf("--%s needs a name", opt)
	}
	var out []namePattern
	for _, n := range strings.Split(s, ",") {
		p := namePattern{name: strings.ToLower(strings.TrimSuffix(n, "."))}
		if p.name == "*" {
			return nil, fmt.Errorf("--%s: %q has no suffix after \"*.\"", opt, n)
		}
		if rest, ok := strings.CutPrefix(p.name, "*."); ok {
			p.name, p.suffix = "."+rest, true
			if rest == "" {
				return nil, fmt.Errorf("--%s: %q has no suffix after \"*.\"", opt, n)
			}
		}
		if p.name == "" {
			return nil, fmt.Errorf("--%s: empty name in %q", opt, s)
		}
		if len(p.name) > 253 {
			return nil, fmt.Errorf("--%s: %q is longer than 253 characters", opt, n)
		}
		for i := 0; i < len(p.name); i++ {
			if c := p.name[i]; c <= ' ' || c >= 0x7f || c == '*' || c == '"' || c == '\'' || c == '\\' {
				return nil, fmt.Errorf("--%s: %q: a name may use '*' only as its first label, and no spaces, quotes or control characters", opt, n)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// matchNames reports whether name matches one of ps.
func matchNames(ps []namePattern, name []byte) bool {
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	for i := range ps {
		p := &ps[i]
		if p.suffix {
			if len(name) > len(p.name) && equalFoldBytes(name[len(name)-len(p.name):], p.name) {
				return true
			}
		} else if equalFoldBytes(name, p.name) {
			return true
		}
	}
	return false
}

// writeNameList appends the list as parsed back by parseNameList.
func writeNameList(b *strings.Builder, ps []namePattern) {
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		if p.suffix {
			b.WriteByte('*')
		}
		b.WriteString(p.name)
	}
}

// parseList splits a comma list, refusing empty entries.
func parseList(opt, s string) ([]string, error) {
	out := strings.Split(s, ",")
	for _, e := range out {
		if e == "" {
			return nil, fmt.Errorf("--%s: empty entry in %q", opt, s)
		}
	}
	return out, nil
}

// saveToken appends s bare when the rule tokenizer reads it back as one
// word unchanged (printable, no space, quote or backslash), else quoted
// as SaveString does.
func saveToken(b *strings.Builder, s string) {
	bare := s != ""
	for i := 0; i < len(s) && bare; i++ {
		c := s[i]
		bare = c > ' ' && c < 0x7f && c != '"' && c != '\'' && c != '\\'
	}
	if bare {
		b.WriteString(s)
		return
	}
	SaveString(b, s)
}

// saveOpt appends " [!] --name value".
func saveOpt(b *strings.Builder, name string, inv bool, value func(b *strings.Builder)) {
	writeInv(b, inv)
	b.WriteString(" --")
	b.WriteString(name)
	b.WriteByte(' ')
	value(b)
}

// listOpt appends " name [!]value", the -L form of an option.
func listOpt(b *strings.Builder, name string, inv bool, value func(b *strings.Builder)) {
	b.WriteByte(' ')
	b.WriteString(name)
	b.WriteByte(' ')
	if inv {
		b.WriteByte('!')
	}
	value(b)
}

// requireProto checks that the rule's -p is one of protos (and not
// negated), as iptables checks -p tcp for -m tcp.
func requireProto(r *Rule, ext string, protos ...uint8) error {
	if r != nil && !r.InvProto {
		for _, p := range protos {
			if r.Proto == p {
				return nil
			}
		}
	}
	names := make([]string, len(protos))
	for i, p := range protos {
		names[i] = "-p " + map[uint8]string{packet.ProtoTCP: "tcp", packet.ProtoUDP: "udp"}[p]
	}
	return fmt.Errorf("-m %s needs %s", ext, strings.Join(names, " or "))
}

// errNoOption is returned by Build when no option was given.
func errNoOption(ext string, opts ...string) error {
	return errors.New("-m " + ext + " needs at least one of --" + strings.Join(opts, ", --"))
}
