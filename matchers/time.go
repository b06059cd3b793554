package matchers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The time match (kernel xt_time.c time_mt, iptables libxt_time.c).
//
// The kernel tests the wall clock at the moment the rule is evaluated;
// qtables tests Context.Now, which is the clock in live mode and the
// packet's capture timestamp offline, so a capture replays the decisions
// the kernel took when the packets went by.
//
// Without --kerneltz all tests are in UTC, as in the kernel. With
// --kerneltz the kernel shifts the time by its own timezone (sys_tz, a
// fixed offset set at boot, never adjusted for daylight saving time);
// qtables, which has no kernel timezone, shifts by the offset of the local
// zone (time.Local, from TZ or /etc/localtime) at that instant. The two
// agree wherever sys_tz equals the local zone's current offset, and differ
// across a daylight-saving change the kernel does not follow.

func init() {
	RegisterMatch(&MatchExt{
		Name: "time",
		Options: []Option{
			{Name: "datestart", Args: 1},
			{Name: "datestop", Args: 1},
			{Name: "timestart", Args: 1},
			{Name: "timestop", Args: 1},
			{Name: "contiguous"},
			{Name: "weekdays", Args: 1, Invert: true},
			{Name: "monthdays", Args: 1, Invert: true},
			{Name: "localtz"},
			{Name: "utc"},
			{Name: "kerneltz"},
		},
		New: func() MatchBuilder { return newTimeBuilder() },
	})
}

// Defaults and masks of struct xt_time_info.
const (
	timeAllMonthdays  uint32 = 0xfffffffe // XT_TIME_ALL_MONTHDAYS: days 1..31
	timeAllWeekdays   uint8  = 0xfe       // XT_TIME_ALL_WEEKDAYS: days 1..7
	timeMaxDaytime           = 86399      // XT_TIME_MAX_DAYTIME, 23:59:59
	timeDefaultStop   uint32 = 0x7fffffff // INT_MAX, the default --datestop
	secondsPerDay            = 86400
	timeMaxYear              = 2038
	timeMinYear              = 1970
	timeDateSyntaxMsg        = "Should be YYYY[-MM[-DD[Thh[:mm[:ss]]]]]"
)

var weekdayNames = [...]string{1: "Mon", 2: "Tue", 3: "Wed", 4: "Thu", 5: "Fri", 6: "Sat", 7: "Sun"}

// timeMatch is struct xt_time_info.
type timeMatch struct {
	dateStart, dateStop       uint32
	daytimeStart, daytimeStop uint32
	monthdays                 uint32
	weekdays                  uint8
	localTZ                   bool
	contiguous                bool
}

type timeBuilder struct {
	m    timeMatch
	seen map[string]bool
}

func newTimeBuilder() *timeBuilder {
	return &timeBuilder{m: timeMatch{
		monthdays:   timeAllMonthdays,
		weekdays:    timeAllWeekdays,
		daytimeStop: timeMaxDaytime,
		dateStop:    timeDefaultStop,
	}}
}

func (b *timeBuilder) Parse(name string, args []string, invert bool) error {
	if err := once(&b.seen, name); err != nil {
		return err
	}
	var err error
	switch name {
	case "datestart":
		b.m.dateStart, err = parseTimeDate(args[0])
	case "datestop":
		b.m.dateStop, err = parseTimeDate(args[0])
	case "timestart":
		b.m.daytimeStart, err = parseDaytime(args[0])
	case "timestop":
		b.m.daytimeStop, err = parseDaytime(args[0])
	case "contiguous":
		b.m.contiguous = true
	case "localtz", "kerneltz":
		// --localtz is iptables' deprecated spelling of --kerneltz.
		b.m.localTZ = true
	case "utc":
	case "monthdays":
		b.m.monthdays, err = parseMonthdays(args[0])
		if invert {
			b.m.monthdays ^= timeAllMonthdays
		}
	case "weekdays":
		b.m.weekdays, err = parseWeekdays(args[0])
		if invert {
			b.m.weekdays ^= timeAllWeekdays
		}
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return err
}

// Build applies libxt_time's final checks (the timezone options exclude
// each other; --contiguous needs a window that wraps) and the kernel's.
func (b *timeBuilder) Build(*Rule) (Match, error) {
	// iptables checks exclusions in its option table's order.
	for _, p := range [][2]string{{"localtz", "utc"}, {"utc", "localtz"}, {"utc", "kerneltz"}, {"kerneltz", "utc"}} {
		if b.seen[p[0]] && b.seen[p[1]] {
			return nil, fmt.Errorf("option \"--%s\" cannot be used together with \"--%s\"", p[0], p[1])
		}
	}
	if b.m.contiguous && b.m.daytimeStart < b.m.daytimeStop {
		return nil, errors.New("--contiguous only makes sense when stoptime is smaller than starttime")
	}
	m := b.m
	return &m, nil
}

// ---- parsing, as libxt_time does it with C's strtoul ----

// cStrtoul is C's strtoul on a 64-bit system: leading white space, an
// optional sign ('-' negates the result modulo 2^64), a "0x" prefix in
// base 16 or 0, a leading 0 for octal in base 0. Overflow gives
// ULONG_MAX. rest is the unread text; with no digits v is 0 and rest is s.
// libxt_time stores the result in unsigned int, so callers truncate it to
// 32 bits as C's conversion does.
func cStrtoul(s string, base int) (v uint64, rest string) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	if (base == 0 || base == 16) && i+2 < len(s) && s[i] == '0' && (s[i+1] == 'x' || s[i+1] == 'X') && digitVal(s[i+2]) < 16 {
		base, i = 16, i+2
	} else if base == 0 {
		base = 10
		if i < len(s) && s[i] == '0' {
			base = 8
		}
	}
	start, overflow := i, false
	for ; i < len(s) && digitVal(s[i]) < base; i++ {
		d := uint64(digitVal(s[i]))
		if v > (1<<64-1-d)/uint64(base) {
			overflow = true
		}
		v = v*uint64(base) + d
	}
	if i == start {
		return 0, s
	}
	switch {
	case overflow:
		v = 1<<64 - 1
	case neg:
		v = -v
	}
	return v, s[i:]
}

// cUint is cStrtoul's result stored in a C unsigned int.
func cUint(s string, base int) (uint32, string) {
	v, rest := cStrtoul(s, base)
	return uint32(v), rest
}

// parseTimeDate is time_parse_date: YYYY[-MM[-DD[Thh[:mm[:ss]]]]] in UTC,
// each part read by strtoul and checked against its bound before the next
// separator; an empty part reads as 0 ("2020-" is month 0, which mktime
// takes for December 2019), and mktime normalizes the rest ("2021-02-31"
// is March 3rd). The year must be 1970..2038.
func parseTimeDate(s string) (uint32, error) {
	bad := fmt.Errorf("Invalid date %q specified. %s", s, timeDateSyntaxMsg)
	var f [6]uint32 // year, month, day, hour, minute, second
	f[1], f[2] = 1, 1
	seps := [...]byte{'-', '-', 'T', ':', ':', 0}
	maxes := [...]uint32{0, 12, 31, 23, 59, 59}
	rest := s
	for i := range f {
		f[i], rest = cUint(rest, 10)
		if i == 0 && (f[0] < timeMinYear || f[0] > timeMaxYear) {
			return 0, bad
		}
		if i > 0 && f[i] > maxes[i] {
			return 0, bad
		}
		if rest == "" {
			break
		}
		if rest[0] != seps[i] || i == len(f)-1 {
			return 0, bad
		}
		rest = rest[1:]
	}
	t := time.Date(int(f[0]), time.Month(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[5]), 0, time.UTC).Unix()
	if t < 0 {
		return 0, errors.New("mktime returned an error")
	}
	return uint32(t), nil
}

// parseDaytime is time_parse_minutes: hh:mm[:ss] as seconds of the day.
func parseDaytime(s string) (uint32, error) {
	bad := fmt.Errorf("invalid time %q specified, should be hh:mm[:ss] format and within the boundaries", s)
	h, rest := cUint(s, 10)
	if rest == "" || rest[0] != ':' || h > 23 {
		return 0, bad
	}
	m, rest := cUint(rest[1:], 10)
	if rest != "" && rest[0] != ':' || m > 59 {
		return 0, bad
	}
	var sec uint32
	if rest != "" {
		sec, rest = cUint(rest[1:], 10)
		if rest != "" || sec > 59 {
			return 0, bad
		}
	}
	return 3600*h + 60*m + sec, nil
}

// timeSegments splits a comma list as libxt_time's my_strseg does: an
// empty argument has no segment, a trailing comma adds none, and each
// segment is cut to max bytes (the size of the C buffer less one), so
// "123" is read as "12".
func timeSegments(s string, max int, each func(seg string) error) error {
	for s != "" {
		seg, rest, more := strings.Cut(s, ",")
		if len(seg) > max {
			seg = seg[:max]
		}
		if err := each(seg); err != nil {
			return err
		}
		if !more {
			break
		}
		s = rest
	}
	return nil
}

// parseMonthdays is time_parse_monthdays: numbers 0..31 (0 is accepted and
// never matches) in any base strtoul knows.
func parseMonthdays(s string) (uint32, error) {
	var mask uint32
	err := timeSegments(s, 2, func(seg string) error {
		d, rest := cUint(seg, 0)
		if rest != "" || d > 31 {
			return fmt.Errorf("%s is not a valid day for --monthdays", seg)
		}
		mask |= 1 << d
		return nil
	})
	return mask, err
}

// parseWeekdays is time_parse_weekdays: a number (0 is refused, and a
// number above 7 sets a bit the 8-bit mask cannot hold, so it is lost), or
// a name compared on its first two bytes, case-sensitively ("Mo",
// "Monday"; not "mon").
func parseWeekdays(s string) (uint8, error) {
	var mask uint32
	err := timeSegments(s, 3, func(seg string) error {
		d, rest := cUint(seg, 0)
		if rest == "" {
			if d == 0 {
				return errors.New("No, the week does NOT begin with Sunday.")
			}
			mask |= 1 << (d & 31) // C's 1 << d, as x86 shifts
			return nil
		}
		valid := false
		for i := 1; i <= 7; i++ {
			if len(seg) >= 2 && seg[:2] == weekdayNames[i][:2] {
				mask |= 1 << i
				valid = true
			}
		}
		if !valid {
			return fmt.Errorf("%s is not a valid day specifier", seg)
		}
		return nil
	})
	return uint8(mask), err
}

// ---- matching ----

// daysSinceEpoch[i] is the day number of January 1st of year
// timeTableLast-i, the table the kernel looks years up in (it ends with
// 2039, so later dates get odd month days, as in the kernel).
const timeTableLast = 2039

var daysSinceEpoch = func() (t [timeTableLast - 1970 + 1]uint32) {
	for i := range t {
		y := timeTableLast - i
		t[i] = uint32(time.Date(y, time.January, 1, 0, 0, 0, 0, time.UTC).Unix() / secondsPerDay)
	}
	return t
}()

var (
	daysBeforeMonth     = [12]uint16{0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334}
	daysBeforeMonthLeap = [12]uint16{0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335}
)

func isLeap(y int) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

// monthday is the kernel's localtime_3: the day of the month of day
// number dse, as an 8-bit value.
func monthday(dse uint32) uint8 {
	i, year := 0, timeTableLast
	for i < len(daysSinceEpoch)-1 && daysSinceEpoch[i] > dse {
		i, year = i+1, year-1
	}
	w := dse - daysSinceEpoch[i]
	tbl := &daysBeforeMonth
	if isLeap(year) {
		tbl = &daysBeforeMonthLeap
	}
	m := 11
	for m > 0 && uint32(tbl[m]) > w {
		m--
	}
	return uint8(w - uint32(tbl[m]) + 1)
}

// Match is time_mt with now = Context.Now (see the file comment for
// --kerneltz).
func (m *timeMatch) Match(c *Context) bool {
	stamp := c.Now.Unix()
	if m.localTZ {
		_, off := c.Now.In(time.Local).Zone()
		stamp += int64(off)
	}
	if stamp < int64(m.dateStart) || stamp > int64(m.dateStop) {
		return false
	}
	t := uint32(uint64(stamp) % secondsPerDay)
	if m.daytimeStart < m.daytimeStop {
		if t < m.daytimeStart || t > m.daytimeStop {
			return false
		}
	} else {
		if t < m.daytimeStart && t > m.daytimeStop {
			return false
		}
		// With --contiguous the part after midnight belongs to the
		// day the window started on.
		if m.contiguous && t <= m.daytimeStop {
			stamp -= secondsPerDay
		}
	}
	dse := uint32(uint64(stamp) / secondsPerDay)
	weekday := (4+dse-1)%7 + 1 // 1970-01-01 was a Thursday; Sunday is 7
	if m.weekdays&(1<<weekday) == 0 {
		return false
	}
	if m.monthdays != timeAllMonthdays {
		if m.monthdays&(1<<(monthday(dse)&31)) == 0 {
			return false
		}
	}
	return true
}

// ---- printing ----

func writeDaytime(b *strings.Builder, sec uint32) {
	b.WriteString(fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec/60%60, sec%60))
}

func writeWeekdays(b *strings.Builder, mask uint8) {
	b.WriteByte(' ')
	n := 0
	for i := 1; i <= 7; i++ {
		if mask&(1<<i) != 0 {
			if n > 0 {
				b.WriteByte(',')
			}
			b.WriteString(weekdayNames[i])
			n++
		}
	}
}

// writeMonthdays appends " 1,2,3", or with ordinals " 1st,2nd,3rd" as
// iptables -L does (by the last digit only: 11st, 12nd, 13rd).
func writeMonthdays(b *strings.Builder, mask uint32, ordinals bool) {
	b.WriteByte(' ')
	n := 0
	for i := 1; i <= 31; i++ {
		if mask&(1<<i) == 0 {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		b.WriteString(strconv.Itoa(i))
		if ordinals {
			b.WriteString([...]string{"th", "st", "nd", "rd", "th", "th", "th", "th", "th", "th"}[i%10])
		}
	}
}

// writeDate appends a UTC date as iptables prints it: "2006-01-02T15:04:05"
// in save form, "2006-01-02 15:04:05" in -L form.
func writeDate(b *strings.Builder, secs uint32, sep byte) {
	t := time.Unix(int64(secs), 0).UTC()
	fmt.Fprintf(b, "%04d-%02d-%02d%c%02d:%02d:%02d", t.Year(), int(t.Month()), t.Day(), sep, t.Hour(), t.Minute(), t.Second())
}

// Save prints the options in libxt_time's order: both --timestart and
// --timestop if either is set, --monthdays and --weekdays if not all (an
// inverted set as its complement), --datestart unless 0, --datestop unless
// 0 (so the default, INT_MAX, is printed as 2038-01-19T03:14:07),
// --kerneltz, --contiguous.
func (m *timeMatch) Save(b *strings.Builder) {
	if m.daytimeStart != 0 || m.daytimeStop != timeMaxDaytime {
		b.WriteString(" --timestart ")
		writeDaytime(b, m.daytimeStart)
		b.WriteString(" --timestop ")
		writeDaytime(b, m.daytimeStop)
	}
	if m.monthdays != timeAllMonthdays {
		b.WriteString(" --monthdays")
		writeMonthdays(b, m.monthdays, false)
	}
	if m.weekdays != timeAllWeekdays {
		b.WriteString(" --weekdays")
		writeWeekdays(b, m.weekdays)
	}
	if m.dateStart != 0 {
		b.WriteString(" --datestart ")
		writeDate(b, m.dateStart, 'T')
	}
	if m.dateStop != 0 {
		b.WriteString(" --datestop ")
		writeDate(b, m.dateStop, 'T')
	}
	if m.localTZ {
		b.WriteString(" --kerneltz")
	}
	if m.contiguous {
		b.WriteString(" --contiguous")
	}
}

// List prints " TIME from 02:00:00 to 03:00:00 on Mon,Sun on 1st,15th
// starting from 2020-01-01 00:00:00 until date 2021-01-01 00:00:00 UTC
// contiguous", each part only when it is not the default ("UTC" without
// --kerneltz). A --datestop of 0 prints " until date" and no date, as
// iptables does.
func (m *timeMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" TIME")
	if m.daytimeStart != 0 || m.daytimeStop != timeMaxDaytime {
		b.WriteString(" from ")
		writeDaytime(b, m.daytimeStart)
		b.WriteString(" to ")
		writeDaytime(b, m.daytimeStop)
	}
	if m.weekdays != timeAllWeekdays {
		b.WriteString(" on")
		writeWeekdays(b, m.weekdays)
	}
	if m.monthdays != timeAllMonthdays {
		b.WriteString(" on")
		writeMonthdays(b, m.monthdays, true)
	}
	if m.dateStart != 0 {
		b.WriteString(" starting from ")
		writeDate(b, m.dateStart, ' ')
	}
	if m.dateStop != timeDefaultStop {
		b.WriteString(" until date")
		if m.dateStop != 0 {
			b.WriteByte(' ')
			writeDate(b, m.dateStop, ' ')
		}
	}
	if !m.localTZ {
		b.WriteString(" UTC")
	}
	if m.contiguous {
		b.WriteString(" contiguous")
	}
}
