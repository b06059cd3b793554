package matchers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// The hashlimit match, revision 3 (kernel xt_hashlimit.c, iptables
// libxt_hashlimit.c). iptables-nft keeps it an xt match, so the kernel's
// own arithmetic applies: token buckets counted in "credits" that accrue
// per jiffy, one bucket per key (the packet's addresses and ports as
// --hashlimit-mode selects them, addresses cut to the mask lengths).
//
// Time is Context.Now converted to jiffies of the reference kernel
// (HZ = hashlimitHZ): the kernel's credits per jiffy and its rounding
// depend on HZ, so the same HZ reproduces its decisions.
//
// Buckets expire --hashlimit-htable-expire ms after their last packet and
// are removed when the garbage collector next runs, every
// --hashlimit-htable-gcinterval ms; a bucket still in the table is reused
// as it is. The kernel's collector is a timer; qtables runs it on the first
// packet after each interval, which is the same as far as packets can
// tell, except that the kernel's timer is not synchronized with packets.
// When the table holds --hashlimit-htable-max buckets, a packet that needs
// a new one is dropped (hotdrop), as in the kernel. Memory is bounded by
// that maximum; a table's storage, once grown, is reused without
// allocating.
//
// One difference is deliberate: the kernel keeps one table per
// --hashlimit-name per network namespace, shared by every rule that names
// it (with the settings of the rule that created it) and kept across rule
// set reloads while a rule still names it. A qtables match instance owns
// its table; rules that share a name share nothing.

func init() {
	RegisterMatch(&MatchExt{
		Name: "hashlimit",
		Options: []Option{
			{Name: "hashlimit-upto", Args: 1, Invert: true},
			{Name: "hashlimit-above", Args: 1, Invert: true},
			{Name: "hashlimit", Args: 1, Invert: true}, // the old name of --hashlimit-upto
			{Name: "hashlimit-srcmask", Args: 1},
			{Name: "hashlimit-dstmask", Args: 1},
			{Name: "hashlimit-burst", Args: 1},
			{Name: "hashlimit-htable-size", Args: 1},
			{Name: "hashlimit-htable-max", Args: 1},
			{Name: "hashlimit-htable-gcinterval", Args: 1},
			{Name: "hashlimit-htable-expire", Args: 1},
			{Name: "hashlimit-mode", Args: 1},
			{Name: "hashlimit-name", Args: 1},
			{Name: "hashlimit-rate-match"},
			{Name: "hashlimit-rate-interval", Args: 1},
		},
		New: func() MatchBuilder {
			return &hashlimitBuilder{cfg: hashlimitCfg{burst: hlDefaultBurst, gcInterval: hlDefaultGC, srcmask: 32, dstmask: 32}}
		},
	})
}

// hashlimitHZ is CONFIG_HZ of the reference kernel (Debian's 6.x kernels
// and the one the conformance suite runs on use 250).
const hashlimitHZ = 250

// Constants of xt_hashlimit.h, libxt_hashlimit.c and xt_hashlimit.c.
const (
	hlModeDIP       = 1 << 0 // XT_HASHLIMIT_HASH_DIP
	hlModeDPT       = 1 << 1
	hlModeSIP       = 1 << 2
	hlModeSPT       = 1 << 3
	hlModeInvert    = 1 << 4
	hlModeBytes     = 1 << 5
	hlModeRateMatch = 1 << 6
	hlModeKeys      = hlModeDIP | hlModeDPT | hlModeSIP | hlModeSPT

	hlScale         = 1000000 // XT_HASHLIMIT_SCALE_v2
	hlDefaultBurst  = 5
	hlMaxBurst      = 1000000 // XT_HASHLIMIT_BURST_MAX
	hlDefaultGC     = 1000    // ms
	hlByteExpire    = 15      // s, XT_HASHLIMIT_BYTE_EXPIRE
	hlByteExpireB   = 60      // s, with a burst
	hlByteShift     = 4       // XT_HASHLIMIT_BYTE_SHIFT
	hlMaxSize       = 1048576 // HASHLIMIT_MAX_SIZE
	hlMaxName       = 254     // NAME_MAX less the terminating NUL
	hlDefaultBucket = 8192    // the kernel's default size with over 1 GiB of RAM
)

// Credits per jiffy (CREDITS_PER_JIFFY and CREDITS_PER_JIFFY_BYTES): the
// largest powers of two that keep a day of credits, or a second of bytes,
// within 64 and 32 bits.
var (
	hlCPJ      = pow2Below(math.MaxUint64 / (hashlimitHZ * 60 * 60 * 24))
	hlCPJBytes = pow2Below(math.MaxUint32 / hashlimitHZ)
)

func pow2Below(x uint64) uint64 { return 1 << (bits.Len64(x) - 1) }

// hlUser2Credits is user2credits for revision 3, in wrapping 64-bit
// arithmetic as the kernel computes it.
func hlUser2Credits(user uint64) uint64 {
	if hlScale >= hashlimitHZ*hlCPJ {
		return user / (hlScale / (hashlimitHZ * hlCPJ))
	}
	return user * (hashlimitHZ * hlCPJ / hlScale)
}

// hlUser2CreditsByte is user2credits_byte.
func hlUser2CreditsByte(user uint32) uint32 {
	return uint32(uint64(user) * hashlimitHZ * hlCPJBytes >> 32)
}

// hlCostToBytes and hlBytesToCost are libxt_hashlimit's conversions
// between a byte rate and the cost stored in avg.
func hlCostToBytes(cost uint64) uint64 {
	r := uint64(math.MaxUint32)
	if cost != 0 {
		r = math.MaxUint32 / cost
	}
	return (r - 1) << hlByteShift
}

func hlBytesToCost(b uint64) uint64 {
	r := uint32(b >> hlByteShift)
	if r+1 == 0 {
		return 0
	}
	return math.MaxUint32 / uint64(r+1)
}

// msecsToJiffies is the kernel's msecs_to_jiffies for HZ dividing 1000.
func msecsToJiffies(ms uint32) uint64 {
	return (uint64(ms)*hashlimitHZ + 999) / 1000
}

// hashlimitCfg is struct hashlimit_cfg3.
type hashlimitCfg struct {
	avg, burst         uint64
	mode               uint32
	size, max          uint32
	gcInterval, expire uint32
	interval           uint32
	srcmask, dstmask   uint8
}

type hashlimitBuilder struct {
	seen map[string]bool
	cfg  hashlimitCfg
	name string
	// unit is the length in seconds of the rate's unit (15 for a byte
	// rate): the default expiry, and the divisor of --hashlimit-rate-match.
	unit uint32
}

func (b *hashlimitBuilder) Parse(name string, args []string, invert bool) error {
	if name == "hashlimit" {
		name = "hashlimit-upto"
	}
	if err := once(&b.seen, name); err != nil {
		return err
	}
	arg := ""
	if len(args) > 0 {
		arg = args[0]
	}
	badValue := fmt.Errorf("Bad value for \"--%s\" option: %q", name, arg)
	switch name {
	case "hashlimit-upto", "hashlimit-above":
		if b.seen["hashlimit-upto"] && b.seen["hashlimit-above"] {
			return errors.New("option \"--hashlimit-upto\" cannot be used together with \"--hashlimit-above\"")
		}
		if invert == (name == "hashlimit-upto") {
			b.cfg.mode |= hlModeInvert
		}
		if avg, ok := parseHashlimitBytes(arg); ok {
			b.cfg.avg, b.unit = avg, hlByteExpire
			b.cfg.mode |= hlModeBytes
			return nil
		}
		mult, ok := parseRateUnit(arg)
		r := uint64(cStrtol(arg))
		if !ok || r == 0 {
			return badValue
		}
		if b.cfg.avg = hlScale * mult / r; b.cfg.avg == 0 {
			return fmt.Errorf("Rate too fast %q", arg)
		}
		b.unit = uint32(mult)
	case "hashlimit-burst":
		v, err := parseHashlimitBurst(arg)
		if err != nil {
			return err
		}
		b.cfg.burst = v
	case "hashlimit-srcmask", "hashlimit-dstmask":
		l, err := parsePlen(name, arg)
		if err != nil {
			return err
		}
		if name == "hashlimit-srcmask" {
			b.cfg.srcmask = l
		} else {
			b.cfg.dstmask = l
		}
	case "hashlimit-htable-size", "hashlimit-htable-max", "hashlimit-htable-gcinterval", "hashlimit-htable-expire":
		v, err := ParseUint(arg, math.MaxUint32)
		if err != nil {
			return fmt.Errorf("bad value for option \"--%s\", or out of range (0-%d)", name, uint32(math.MaxUint32))
		}
		switch name {
		case "hashlimit-htable-size":
			b.cfg.size = uint32(v)
		case "hashlimit-htable-max":
			b.cfg.max = uint32(v)
		case "hashlimit-htable-gcinterval":
			b.cfg.gcInterval = uint32(v)
		default:
			b.cfg.expire = uint32(v)
		}
	case "hashlimit-mode":
		for _, tok := range strings.FieldsFunc(arg, func(r rune) bool { return r == ',' || r == '|' }) {
			switch tok {
			case "dstip":
				b.cfg.mode |= hlModeDIP
			case "srcip":
				b.cfg.mode |= hlModeSIP
			case "srcport":
				b.cfg.mode |= hlModeSPT
			case "dstport":
				b.cfg.mode |= hlModeDPT
			default:
				return badValue
			}
		}
	case "hashlimit-name":
		if arg == "" {
			return errors.New("Argument must have a minimum length of 1 characters")
		}
		b.name = arg
		if len(b.name) > hlMaxName {
			b.name = b.name[:hlMaxName]
		}
	case "hashlimit-rate-match":
		b.cfg.mode |= hlModeRateMatch
	case "hashlimit-rate-interval":
		v := cStrtol(arg)
		if int32(v) <= 0 {
			return badValue
		}
		b.cfg.interval = uint32(int32(v))
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return nil
}

// parseHashlimitBytes is libxt_hashlimit's parse_bytes: "N[k|m]b/s" (the
// byte before "b/s" is the factor, anything but k or m meaning 1), N read
// by atoll. It reports false for anything else, which is then read as a
// packet rate.
func parseHashlimitBytes(s string) (uint64, bool) {
	i := strings.Index(s, "b/s")
	if i <= 0 {
		return 0, false
	}
	r := uint64(cStrtol(s))
	if r == 0 {
		return 0, false
	}
	return hlBytesToCost(r * hlFactor(s[i-1])), true
}

func hlFactor(c byte) uint64 {
	switch c {
	case 'm':
		return 1024 * 1024
	case 'k':
		return 1024
	}
	return 1
}

// parseHashlimitBurst is parse_burst: a strtoul number of at least 1 and,
// when nothing follows it, at most 1000000; a following k or m multiplies
// it (and anything else after the digits is ignored).
func parseHashlimitBurst(s string) (uint64, error) {
	bad := fmt.Errorf("bad value for option \"--hashlimit-burst\", or out of range (1-%d).", hlMaxBurst)
	v, rest, ok := strtoul(s, 0)
	if !ok || v < 1 || rest == "" && v > hlMaxBurst {
		return 0, bad
	}
	if rest != "" {
		hi, lo := bits.Mul64(v, hlFactor(rest[0]))
		if hi != 0 {
			return 0, bad
		}
		v = lo
	}
	return v, nil
}

// parsePlen reads a mask option: a prefix length (a strtoul number), or a
// dotted IPv4 mask, which must be contiguous. Lengths above 32 pass
// iptables and are refused by the kernel.
func parsePlen(name, s string) (uint8, error) {
	if v, err := ParseUint(s, math.MaxUint32); err == nil {
		if v > 32 {
			return 0, fmt.Errorf("--%s %d: longer than an IPv4 address (the kernel refuses it)", name, v)
		}
		return uint8(v), nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
		m := binary.BigEndian.Uint32(a.AsSlice())
		l := bits.LeadingZeros32(^m)
		if m<<l != 0 {
			return 0, fmt.Errorf("--%s %s: not a contiguous mask (the kernel refuses it)", name, s)
		}
		return uint8(l), nil
	}
	return 0, fmt.Errorf("bad value for option \"--%s\", neither a valid network mask nor valid CIDR (0-32).", name)
}

// Build applies libxt_hashlimit's final check (hashlimit_mt_check) and the
// kernel's hashlimit_mt_check_common, then creates the table.
func (b *hashlimitBuilder) Build(*Rule) (Match, error) {
	if !b.seen["hashlimit-upto"] && !b.seen["hashlimit-above"] {
		return nil, errors.New("You have to specify --hashlimit")
	}
	cfg := b.cfg
	if !b.seen["hashlimit-htable-expire"] {
		cfg.expire = b.unit * 1000
	}
	if cfg.mode&hlModeBytes != 0 {
		burst := uint64(0)
		if b.seen["hashlimit-burst"] {
			unit := hlCostToBytes(cfg.avg)
			if cfg.burst < unit {
				return nil, fmt.Errorf("burst cannot be smaller than %db", unit)
			}
			burst = uint64(uint32(cfg.burst)) / unit
			if cfg.burst%unit != 0 {
				burst++
			}
			if !b.seen["hashlimit-htable-expire"] {
				cfg.expire = hlByteExpireB * 1000
			}
		}
		cfg.burst = burst
	} else if cfg.burst > hlMaxBurst {
		return nil, fmt.Errorf("bad value for option \"--hashlimit-burst\", or out of range (1-%d).", hlMaxBurst)
	}
	if cfg.mode&hlModeRateMatch != 0 {
		if cfg.mode&hlModeBytes == 0 {
			cfg.avg /= uint64(b.unit)
		}
		if cfg.interval == 0 {
			cfg.interval = b.unit
			if cfg.mode&hlModeBytes != 0 {
				cfg.interval = 1
			}
		}
	}
	if b.name == "" {
		return nil, errors.New("option \"--hashlimit-name\" must be specified")
	}

	// The kernel's checks.
	if b.name == "." || b.name == ".." || strings.Contains(b.name, "/") {
		return nil, fmt.Errorf("--hashlimit-name %q is not a valid /proc file name (the kernel refuses it)", b.name)
	}
	if cfg.gcInterval == 0 || cfg.expire == 0 {
		return nil, errors.New("--hashlimit-htable-gcinterval and --hashlimit-htable-expire must not be 0 (the kernel refuses it)")
	}
	cfg.size = min(cfg.size, hlMaxSize)
	cfg.max = min(cfg.max, hlMaxSize)
	switch {
	case cfg.mode&hlModeRateMatch != 0:
		if cfg.avg == 0 || cfg.avg > math.MaxUint32 {
			return nil, errors.New("invalid rate for --hashlimit-rate-match (the kernel refuses it)")
		}
	case cfg.mode&hlModeBytes != 0:
		if hlUser2CreditsByte(uint32(cfg.avg)) == 0 {
			return nil, errors.New("byte rate too high (the kernel refuses it)")
		}
	case cfg.burst == 0 || hlUser2Credits(cfg.avg*cfg.burst) < hlUser2Credits(cfg.avg):
		return nil, fmt.Errorf("rate and burst overflow the kernel's credits: try a lower burst (the kernel refuses %d/%d)", cfg.avg, cfg.burst)
	}
	return newHashlimitMatch(cfg, b.name), nil
}

// ---- the table ----

// hlKey is struct dsthash_dst for IPv4: the fields the mode leaves out are
// zero.
type hlKey struct {
	src, dst     uint32
	sport, dport uint16
}

// hlEntry is struct dsthash_ent's state. Times are in jiffies.
type hlEntry struct {
	key     hlKey
	expires uint64
	prev    uint64
	// token bucket mode
	credit, creditCap, cost uint64
	// rate match mode
	prevWindow  bool
	currentRate uint64
	rate        uint64
	burst       uint64
}

// hashlimitMatch is one rule's hashlimit instance with its table.
type hashlimitMatch struct {
	cfg  hashlimitCfg
	name string
	// size and max are the table's effective bounds (the kernel's
	// defaults filled in).
	size, max uint32
	expireJ   uint64 // expire in jiffies
	gcJ       uint64 // gc interval in jiffies

	mu      sync.Mutex
	index   map[hlKey]int32 // key to entries slot
	entries []hlEntry
	free    []int32
	started bool
	nextGC  uint64
}

func newHashlimitMatch(cfg hashlimitCfg, name string) *hashlimitMatch {
	m := &hashlimitMatch{cfg: cfg, name: name, size: cfg.size}
	if m.size == 0 {
		m.size = hlDefaultBucket
	}
	m.max = cfg.max
	if m.max == 0 {
		m.max = 8 * m.size
	} else if m.max < m.size {
		m.max = m.size
	}
	m.expireJ = msecsToJiffies(cfg.expire)
	m.gcJ = msecsToJiffies(cfg.gcInterval)
	m.index = make(map[hlKey]int32, min(m.size, 1024))
	return m
}

// hlPortsOffset is proto_ports_offset: where a protocol's two 16-bit
// "ports" start in its header (ESP and AH carry their SPI there), -1 for
// protocols without ports.
func hlPortsOffset(proto uint8) int {
	switch proto {
	case 6, 17, 33, 50, 132, 136: // TCP, UDP, DCCP, ESP, SCTP, UDP-Lite
		return 0
	case 51: // AH
		return 4
	}
	return -1
}

// key is hashlimit_init_dst. ok is false when the ports cannot be read
// (the kernel hot-drops the packet). Fragments are not special: a later
// fragment's first bytes are read as ports, as the kernel does.
func (m *hashlimitMatch) key(c *Context) (k hlKey, ok bool) {
	p := c.Pkt
	if m.cfg.mode&hlModeDIP != 0 {
		k.dst = maskl(p.Dst, m.cfg.dstmask)
	}
	if m.cfg.mode&hlModeSIP != 0 {
		k.src = maskl(p.Src, m.cfg.srcmask)
	}
	if m.cfg.mode&(hlModeSPT|hlModeDPT) == 0 {
		return k, true
	}
	off := hlPortsOffset(p.Proto)
	if off < 0 {
		return k, true
	}
	if len(p.L4) < off+4 {
		return k, false
	}
	if m.cfg.mode&hlModeSPT != 0 {
		k.sport = binary.BigEndian.Uint16(p.L4[off:])
	}
	if m.cfg.mode&hlModeDPT != 0 {
		k.dport = binary.BigEndian.Uint16(p.L4[off+2:])
	}
	return k, true
}

func maskl(a netip.Addr, l uint8) uint32 {
	if l == 0 || !a.Is4() {
		return 0
	}
	b := a.As4()
	return binary.BigEndian.Uint32(b[:]) & (^uint32(0) << (32 - l))
}

// jiffies converts the Context's time to jiffies at hashlimitHZ.
func jiffiesOf(c *Context) uint64 {
	ns := c.Now.UnixNano()
	return uint64(ns/1e9)*hashlimitHZ + uint64(ns%1e9)*hashlimitHZ/1e9
}

// Match is hashlimit_mt_common.
func (m *hashlimitMatch) Match(c *Context) bool {
	k, ok := m.key(c)
	if !ok {
		c.Hotdrop = true
		return false
	}
	now := jiffiesOf(c)
	inv := m.cfg.mode&hlModeInvert != 0
	m.mu.Lock()
	defer m.mu.Unlock()
	m.collect(now)
	var e *hlEntry
	if i, found := m.index[k]; found {
		e = &m.entries[i]
		e.expires = now + m.expireJ
		m.recalc(e, now)
	} else {
		if uint32(len(m.index)) >= m.max {
			c.Hotdrop = true
			return false
		}
		e = m.alloc(k)
		e.expires = now + m.expireJ
		m.init(e, now)
	}
	if m.cfg.mode&hlModeRateMatch != 0 {
		cost := uint64(1)
		if m.cfg.mode&hlModeBytes != 0 {
			cost = uint64(c.Pkt.Len)
		}
		e.currentRate += cost
		if !e.prevWindow && e.currentRate <= e.burst {
			return !inv
		}
		return inv
	}
	cost := e.cost
	if m.cfg.mode&hlModeBytes != 0 {
		cost = m.byteCost(uint32(c.Pkt.Len), e)
	}
	if e.credit >= cost {
		e.credit -= cost
		return !inv
	}
	return inv
}

// alloc stores a new entry for k, reusing a freed slot when there is one.
func (m *hashlimitMatch) alloc(k hlKey) *hlEntry {
	var i int32
	if n := len(m.free); n > 0 {
		i, m.free = m.free[n-1], m.free[:n-1]
	} else {
		m.entries = append(m.entries, hlEntry{})
		i = int32(len(m.entries) - 1)
	}
	m.index[k] = i
	m.entries[i] = hlEntry{key: k}
	return &m.entries[i]
}

// collect is htable_gc: every gc interval, entries past their expiry go.
func (m *hashlimitMatch) collect(now uint64) {
	if !m.started {
		m.started, m.nextGC = true, now+m.gcJ
		return
	}
	if now < m.nextGC {
		return
	}
	m.nextGC = now + m.gcJ
	for k, i := range m.index {
		if now >= m.entries[i].expires {
			delete(m.index, k)
			m.free = append(m.free, i)
		}
	}
}

// init is rateinfo_init.
func (m *hashlimitMatch) init(e *hlEntry, now uint64) {
	e.prev = now
	cfg := &m.cfg
	switch {
	case cfg.mode&hlModeRateMatch != 0:
		if cfg.mode&hlModeBytes != 0 {
			r := uint64(math.MaxUint32)
			if uint32(cfg.avg) != 0 {
				r = math.MaxUint32 / uint64(uint32(cfg.avg))
			}
			e.rate = (r - 1) << hlByteShift
			e.burst = e.rate
			if cfg.burst != 0 {
				e.burst = cfg.burst * e.rate
			}
		} else {
			e.rate = hlScale / cfg.avg
			e.burst = cfg.burst + e.rate
		}
	case cfg.mode&hlModeBytes != 0:
		e.credit = hlCPJBytes * hashlimitHZ
		e.cost = uint64(hlUser2CreditsByte(uint32(cfg.avg)))
		e.creditCap = cfg.burst
	default:
		e.credit = hlUser2Credits(cfg.avg * cfg.burst)
		e.cost = hlUser2Credits(cfg.avg)
		e.creditCap = e.credit
	}
}

// recalc is rateinfo_recalc. Time that runs backwards (out-of-order
// timestamps) counts as no time.
func (m *hashlimitMatch) recalc(e *hlEntry, now uint64) {
	if now <= e.prev {
		return
	}
	delta := now - e.prev
	if m.cfg.mode&hlModeRateMatch != 0 {
		interval := uint64(m.cfg.interval) * hashlimitHZ
		if delta < interval {
			return
		}
		e.prev = now
		e.prevWindow = e.currentRate*interval > delta*e.rate
		e.currentRate = 0
		return
	}
	e.prev = now
	var limit uint64
	if m.cfg.mode&hlModeBytes != 0 {
		old := e.credit
		e.credit += hlCPJBytes * delta
		limit = hlCPJBytes * hashlimitHZ
		if old >= e.credit { // overflow
			e.credit = limit
			return
		}
	} else {
		e.credit += delta * hlCPJ
		limit = e.creditCap
	}
	if e.credit > limit {
		e.credit = limit
	}
}

// byteCost is hashlimit_byte_cost: the packet's length in 16-byte chunks
// (rounded up, plus one) times the cost of a chunk, refilling the bucket
// from the burst allowance when it runs short.
func (m *hashlimitMatch) byteCost(length uint32, e *hlEntry) uint64 {
	tmp := uint64(length>>hlByteShift+1) * e.cost
	if full := uint64(hlCPJBytes * hashlimitHZ); tmp > full {
		tmp = full
	}
	if e.credit < tmp && e.creditCap != 0 {
		e.creditCap--
		e.credit = hlCPJBytes * hashlimitHZ
	}
	return uint64(uint32(tmp))
}

// ---- printing ----

// hlRates is libxt_hashlimit's rates table for revision 2 and later.
var hlRates = [...]struct {
	name string
	mult uint64
}{
	{"day", hlScale * 24 * 60 * 60},
	{"hour", hlScale * 60 * 60},
	{"min", hlScale * 60},
	{"sec", hlScale},
}

// writeHLRate is print_rate: " N/unit", returning the unit in ms (the
// default expiry the rate implies).
func writeHLRate(b *strings.Builder, period uint64) uint64 {
	if period == 0 {
		b.WriteString(" inf")
		return 0
	}
	i := 1
	for ; i < len(hlRates); i++ {
		m := hlRates[i].mult
		if period > m || m/period < m%period {
			break
		}
	}
	u := hlRates[i-1]
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(u.mult/period, 10))
	b.WriteByte('/')
	b.WriteString(u.name)
	return u.mult / hlScale * 1000
}

var hlByteUnits = [...]struct {
	name   string
	thresh uint64
}{{"m", 1024 * 1024}, {"k", 1024}, {"", 1}}

// writeHLBytes is print_bytes: " 1kb/s" and, with a burst,
// " <prefix>burst 2mb"; it returns the default expiry in ms.
func writeHLBytes(b *strings.Builder, avg, burst uint64, prefix string) uint64 {
	r := hlCostToBytes(avg)
	i := 0
	for ; i < len(hlByteUnits)-1; i++ {
		t := hlByteUnits[i].thresh
		if r >= t && hlBytesToCost(r&^(t-1)) == avg {
			break
		}
	}
	fmt.Fprintf(b, " %d%sb/s", r/hlByteUnits[i].thresh, hlByteUnits[i].name)
	if burst == 0 {
		return hlByteExpire * 1000
	}
	r *= burst
	b.WriteByte(' ')
	b.WriteString(prefix)
	for i = 0; i < len(hlByteUnits)-1; i++ {
		if r >= hlByteUnits[i].thresh {
			break
		}
	}
	fmt.Fprintf(b, "burst %d%sb", r/hlByteUnits[i].thresh, hlByteUnits[i].name)
	return hlByteExpireB * 1000
}

// writeHLMode is print_mode: srcip, srcport, dstip, dstport in that order.
func writeHLMode(b *strings.Builder, mode uint32, sep byte) {
	b.WriteByte(' ')
	n := 0
	for _, f := range [...]struct {
		bit  uint32
		name string
	}{{hlModeSIP, "srcip"}, {hlModeSPT, "srcport"}, {hlModeDIP, "dstip"}, {hlModeDPT, "dstport"}} {
		if mode&f.bit != 0 {
			if n > 0 {
				b.WriteByte(sep)
			}
			b.WriteString(f.name)
			n++
		}
	}
}

// writeTail appends the options both forms print after the rate: table
// settings that differ from their defaults, masks, rate matching.
func (m *hashlimitMatch) writeTail(b *strings.Builder, quantum uint64, save bool) {
	cfg := &m.cfg
	opt := func(name string) {
		if save {
			b.WriteString(" --hashlimit-")
		} else {
			b.WriteByte(' ')
		}
		b.WriteString(name)
	}
	num := func(name string, v uint64) {
		opt(name)
		b.WriteByte(' ')
		b.WriteString(strconv.FormatUint(v, 10))
	}
	if cfg.size != 0 {
		num("htable-size", uint64(cfg.size))
	}
	if cfg.max != 0 {
		num("htable-max", uint64(cfg.max))
	}
	if cfg.gcInterval != hlDefaultGC {
		num("htable-gcinterval", uint64(cfg.gcInterval))
	}
	if uint64(cfg.expire) != quantum {
		num("htable-expire", uint64(cfg.expire))
	}
	if cfg.srcmask != 32 {
		num("srcmask", uint64(cfg.srcmask))
	}
	if cfg.dstmask != 32 {
		num("dstmask", uint64(cfg.dstmask))
	}
	if cfg.mode&hlModeRateMatch != 0 {
		opt("rate-match")
		if cfg.interval != 1 {
			num("rate-interval", uint64(cfg.interval))
		}
	}
}

// Save is hashlimit_mt_save: --hashlimit-upto or --hashlimit-above (an
// inverted one is saved as the other), the rate and burst, the mode, the
// name, then the settings that are not defaults.
func (m *hashlimitMatch) Save(b *strings.Builder) {
	cfg := &m.cfg
	if cfg.mode&hlModeInvert != 0 {
		b.WriteString(" --hashlimit-above")
	} else {
		b.WriteString(" --hashlimit-upto")
	}
	var quantum uint64
	if cfg.mode&hlModeBytes != 0 {
		quantum = writeHLBytes(b, cfg.avg, cfg.burst, "--hashlimit-")
	} else {
		quantum = writeHLRate(b, cfg.avg)
		b.WriteString(" --hashlimit-burst ")
		b.WriteString(strconv.FormatUint(cfg.burst, 10))
	}
	if cfg.mode&hlModeKeys != 0 {
		b.WriteString(" --hashlimit-mode")
		writeHLMode(b, cfg.mode, ',')
	}
	b.WriteString(" --hashlimit-name ")
	b.WriteString(m.name)
	m.writeTail(b, quantum, true)
}

// List is hashlimit_mt_print: " limit: up to 1/sec burst 5 mode srcip-dstport
// ...". With a --hashlimit-rate-interval the rate shown is per interval.
func (m *hashlimitMatch) List(b *strings.Builder, _ bool) {
	cfg := &m.cfg
	if cfg.mode&hlModeInvert != 0 {
		b.WriteString(" limit: above")
	} else {
		b.WriteString(" limit: up to")
	}
	var quantum uint64
	if cfg.mode&hlModeBytes != 0 {
		quantum = writeHLBytes(b, cfg.avg, cfg.burst, "")
	} else {
		period := cfg.avg
		if cfg.interval != 0 {
			period *= uint64(cfg.interval)
		}
		quantum = writeHLRate(b, period)
		b.WriteString(" burst ")
		b.WriteString(strconv.FormatUint(cfg.burst, 10))
	}
	if cfg.mode&hlModeKeys != 0 {
		b.WriteString(" mode")
		writeHLMode(b, cfg.mode, '-')
	}
	m.writeTail(b, quantum, false)
}
