package matchers

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The limit match as iptables-nft 1.8.9 installs it. iptables parses the
// options with libxt_limit into struct xt_rateinfo (an average interval
// "avg" in 1/10000 s and a burst), but the nf_tables backend does not load
// xt_limit: it turns the match into a native nftables limit expression
// (iptables nft.c add_nft_limit), and the kernel then runs nft_limit.c, not
// xt_limit.c. That changes the arithmetic, so qtables follows the path the
// rule really takes:
//
//   - the rate is re-expressed as RATE per UNIT with the unit chosen as
//     for printing (day, hour, minute, second) and RATE = unit/avg,
//     truncated: "--limit 7000/sec" (avg 1) becomes 10000/second;
//   - nft_limit keeps a bucket of nanoseconds: a packet costs
//     unit_ns/RATE, the bucket holds cost*burst and starts full, and it
//     refills at one nanosecond per nanosecond of clock;
//   - a burst of 0 is taken as 5 by the kernel, so it prints as 5.
//
// iptables-save reads the expression back, so what it prints is derived
// from RATE and UNIT ("--limit 120/hour" is saved as "2/min").
//
// The clock is Context.Now. The bucket is per rule, shared by all workers
// through a mutex (the kernel's spinlock); a packet whose time is earlier
// than the last one seen (workers finishing out of order, or an unordered
// capture) adds no tokens and does not move the clock back, where the
// kernel's monotonic clock never goes back at all.

func init() {
	RegisterMatch(&MatchExt{
		Name: "limit",
		Options: []Option{
			{Name: "limit", Args: 1},
			{Name: "limit-burst", Args: 1},
		},
		New: func() MatchBuilder { return &limitBuilder{avg: limitScale * 3600 / 3, burst: limitDefaultBurst} },
	})
}

const (
	limitScale        = 10000 // XT_LIMIT_SCALE
	limitDefaultBurst = 5     // XT_LIMIT_BURST and NFT_LIMIT_PKT_BURST_DEFAULT
	limitMaxBurst     = 10000
)

// limitUnits are libxt_limit's rates table and add_nft_limit's mult[]:
// the length of each unit in 1/10000 s, longest first.
var limitUnits = [...]struct {
	name string
	mult uint32
}{
	{"day", limitScale * 24 * 60 * 60},
	{"hour", limitScale * 60 * 60},
	{"min", limitScale * 60},
	{"sec", limitScale},
}

// limitUnitIndex is the loop of libxt_limit's print_rate and of
// add_nft_limit: the index of the unit a rate of one packet per avg is
// expressed in.
func limitUnitIndex(avg uint32) int {
	i := 1
	for ; i < len(limitUnits); i++ {
		m := limitUnits[i].mult
		if avg > m || m/avg < m%avg {
			break
		}
	}
	return i - 1
}

type limitBuilder struct {
	seen  map[string]bool
	avg   uint32
	burst uint32
}

func (b *limitBuilder) Parse(name string, args []string, invert bool) error {
	if err := once(&b.seen, name); err != nil {
		return err
	}
	if invert {
		return fmt.Errorf("option \"--%s\" cannot be inverted", name)
	}
	switch name {
	case "limit":
		avg, err := parseLimitRate(args[0])
		if err != nil {
			return err
		}
		b.avg = avg
	case "limit-burst":
		v, err := ParseUint(args[0], limitMaxBurst)
		if err != nil {
			return fmt.Errorf("bad value for option \"--limit-burst\", or out of range (0-%d)", limitMaxBurst)
		}
		b.burst = uint32(v)
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return nil
}

// parseRateUnit reads the unit of a rate as libxt_limit's and
// libxt_hashlimit's parse_rate do: after a '/', any non-empty prefix of
// second, minute, hour or day in any case; no '/' means second. It returns
// the unit's length in seconds.
func parseRateUnit(s string) (uint64, bool) {
	_, unit, ok := strings.Cut(s, "/")
	switch {
	case !ok:
		return 1, true
	case unit == "":
		return 0, false
	case hasPrefixFold("second", unit):
		return 1, true
	case hasPrefixFold("minute", unit):
		return 60, true
	case hasPrefixFold("hour", unit):
		return 3600, true
	case hasPrefixFold("day", unit):
		return 86400, true
	}
	return 0, false
}

// parseLimitRate is libxt_limit's parse_rate: N[/UNIT] with N read by
// atoi into a 32-bit unsigned value, giving the average interval
// 10000*seconds/N in 32-bit arithmetic ("-5/sec" is a huge N, hence "too
// fast").
func parseLimitRate(s string) (uint32, error) {
	bad := fmt.Errorf("bad rate %q'", s)
	mult, ok := parseRateUnit(s)
	if !ok {
		return 0, bad
	}
	r := uint32(int32(cStrtol(s)))
	if r == 0 {
		return 0, bad
	}
	avg := uint32(limitScale*mult) / r
	if avg == 0 {
		return 0, fmt.Errorf("Rate too fast %q", s)
	}
	return avg, nil
}

// cStrtol is C's strtol in base 10 with a 64-bit long: the leading number
// of s, clamped to the int64 range; 0 when there is none. atoi is its
// value truncated to 32 bits, atoll the value itself.
func cStrtol(s string) int64 {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	var mag uint64
	big := false
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		if mag > (1<<64-1-9)/10 {
			big = true
		}
		mag = mag*10 + uint64(s[i]-'0')
	}
	switch {
	case neg && (big || mag >= 1<<63):
		return -1 << 63
	case neg:
		return -int64(mag)
	case big || mag > 1<<63-1:
		return 1<<63 - 1
	}
	return int64(mag)
}

// Build computes what the kernel's nft_limit computes when the rule is
// loaded.
func (b *limitBuilder) Build(*Rule) (Match, error) {
	u := limitUnitIndex(b.avg)
	m := &limitMatch{
		rate:  uint64(limitUnits[u].mult / b.avg),
		unit:  uint64(limitUnits[u].mult / limitScale),
		burst: uint64(b.burst),
	}
	if m.burst == 0 {
		m.burst = limitDefaultBurst
	}
	m.cost = m.unit * uint64(time.Second) / m.rate
	m.max = m.cost * m.burst
	return m, nil
}

// limitMatch is an nft_limit expression of type packets.
type limitMatch struct {
	rate, unit, burst uint64 // as dumped: RATE per UNIT seconds, burst
	cost, max         uint64 // nanoseconds a packet costs, bucket size

	mu      sync.Mutex
	started bool
	tokens  uint64 // nanoseconds in the bucket
	last    int64  // Context.Now of the previous evaluation, ns
}

// Match is nft_limit_eval: refill by the time since the previous
// evaluation (capped at the bucket size), then take the cost if there is
// enough. The time is recorded on every evaluation, matching or not.
func (m *limitMatch) Match(c *Context) bool {
	now := c.Now.UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		m.started, m.tokens, m.last = true, m.max, now
	}
	if now > m.last {
		m.tokens += uint64(now - m.last)
		m.last = now
	}
	if m.tokens > m.max {
		m.tokens = m.max
	}
	if m.tokens >= m.cost {
		m.tokens -= m.cost
		return true
	}
	return false
}

// avg is the xt_rateinfo average iptables-save derives from the expression.
func (m *limitMatch) avg() uint32 { return uint32(limitScale * m.unit / m.rate) }

// writeLimitRate appends " N/unit" as libxt_limit's print_rate does.
func writeLimitRate(b *strings.Builder, avg uint32) {
	u := limitUnitIndex(avg)
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(uint64(limitUnits[u].mult/avg), 10))
	b.WriteByte('/')
	b.WriteString(limitUnits[u].name)
}

// Save prints " --limit N/unit" and " --limit-burst N" unless it is 5.
func (m *limitMatch) Save(b *strings.Builder) {
	b.WriteString(" --limit")
	writeLimitRate(b, m.avg())
	if m.burst != limitDefaultBurst {
		b.WriteString(" --limit-burst ")
		b.WriteString(strconv.FormatUint(m.burst, 10))
	}
}

// List prints " limit: avg N/unit burst N".
func (m *limitMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" limit: avg")
	writeLimitRate(b, m.avg())
	b.WriteString(" burst ")
	b.WriteString(strconv.FormatUint(m.burst, 10))
}
