package conformance

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Time matches for the generator. The kernel's time match reads the wall
// clock when the packet passes, qtables reads the pcap's timestamps, which
// are the sending time (see runFrames): a rule whose result changed while
// a case runs would count differently for reasons of timing alone. So every
// edge of a generated rule (its daily window's start and end, midnight when
// weekdays, month days or --contiguous are tested, its dates) lies at least
// TimeMargin from the case's clock, and the rule has one result for the
// whole case, sometimes a match and sometimes not.
//
// --kerneltz shifts the kernel's clock by its timezone, which cannot be
// read from userspace, and qtables' by the local zone: rules with it test
// only dates, at least TimeMargin plus a day (more than any timezone) away.

// TimeMargin is how far every edge of a generated time rule is from the
// case's clock.
const TimeMargin = time.Hour

const day = 86400

// timeOpt returns "-m time ..." around g.clock. Most rules are built to
// match at the clock (every part of them includes it), the others to miss
// it by one or more of their parts.
func (g *ruleGen) timeOpt() string {
	x := g.x
	now := g.clock.UTC()
	t0 := now.Hour()*3600 + now.Minute()*60 + now.Second()
	margin := int(TimeMargin / time.Second)
	// Weekdays, month days and --contiguous change at midnight.
	dayTests := circDist(t0, 0) > margin
	hit := x.IntN(10) < 7
	// include says whether the next part should include the clock: all
	// do for a hit, each with even odds for a miss (and the rule is
	// re-drawn below when none ended up excluding it).
	var missed bool
	include := func() bool {
		if hit || x.IntN(2) == 0 {
			return true
		}
		missed = true
		return false
	}
	for {
		missed = false
		var opts []string
		daily := x.IntN(2) == 0
		if daily {
			start, stop := g.dailyWindow(t0, margin, include())
			opts = append(opts, "--timestart "+g.daytime(start), "--timestop "+g.daytime(stop))
			if start >= stop && dayTests && x.IntN(2) == 0 {
				opts = append(opts, "--contiguous")
			}
		}
		days := false
		if dayTests && x.IntN(3) == 0 {
			days = true
			opts = append(opts, g.weekdaysOpt(now, include()))
		}
		if dayTests && x.IntN(4) == 0 {
			days = true
			opts = append(opts, g.monthdaysOpt(now, include()))
		}
		tz := !daily && !days && x.IntN(3) == 0
		dateMargin := int64(margin)
		if tz {
			dateMargin += day
		}
		if x.IntN(3) == 0 {
			// a start before the clock includes it
			opts = append(opts, "--datestart "+g.dateAway(now, dateMargin, !include()))
		}
		if x.IntN(3) == 0 {
			opts = append(opts, "--datestop "+g.dateAway(now, dateMargin, include()))
		}
		if tz {
			opts = append(opts, []string{"--kerneltz", "--localtz"}[x.IntN(2)])
		} else if x.IntN(8) == 0 {
			opts = append(opts, "--utc")
		}
		if !hit && !missed {
			continue
		}
		x.Shuffle(len(opts), func(i, j int) { opts[i], opts[j] = opts[j], opts[i] })
		if len(opts) == 0 {
			return "-m time"
		}
		return "-m time " + strings.Join(opts, " ")
	}
}

// circDist is the distance between two times of day around the clock.
func circDist(a, b int) int {
	d := ((a-b)%day + day) % day
	return min(d, day-d)
}

// dailyWindow returns --timestart and --timestop values whose window
// includes t0 or not, with both edges at least margin away. The kernel's
// window runs forward from start to stop, across midnight when stop is
// smaller, and is the whole day when they are equal.
func (g *ruleGen) dailyWindow(t0, margin int, in bool) (start, stop int) {
	x := g.x
	away := func() int { return margin + 1 + x.IntN(day/2-2*margin) }
	if in {
		if x.IntN(6) == 0 {
			v := g.daytimeAway(t0, margin)
			return v, v // the whole day
		}
		return ((t0-away())%day + day) % day, (t0 + away()) % day
	}
	// start after t0, stop before it: the forward arc from start to stop
	// leaves t0 out
	a, b := away(), away()
	return (t0 + a) % day, ((t0-b)%day + day) % day
}

// daytimeAway returns a time of day whose second, and the second after it
// (a --timestop is inclusive), are at least margin from t0: a whole hour,
// a half hour or any second.
func (g *ruleGen) daytimeAway(t0, margin int) int {
	for {
		var v int
		switch g.x.IntN(3) {
		case 0:
			v = 3600 * g.x.IntN(24)
		case 1:
			v = 1800 * g.x.IntN(48)
		default:
			v = g.x.IntN(day)
		}
		if circDist(v, t0) > margin && circDist(v+1, t0) > margin {
			return v
		}
	}
}

// daytime spells seconds of the day as hh:mm:ss or, on a minute, hh:mm.
func (g *ruleGen) daytime(v int) string {
	if v%60 == 0 && g.x.IntN(2) == 0 {
		return fmt.Sprintf("%02d:%02d", v/3600, v/60%60)
	}
	return fmt.Sprintf("%02d:%02d:%02d", v/3600, v/60%60, v%60)
}

var weekdaySpellings = [8][]string{
	1: {"Mon", "Monday", "Mo", "1"},
	2: {"Tue", "Tuesday", "Tu", "2"},
	3: {"Wed", "Wednesday", "We", "3"},
	4: {"Thu", "Thursday", "Th", "4"},
	5: {"Fri", "Friday", "Fr", "5"},
	6: {"Sat", "Saturday", "Sa", "6"},
	7: {"Sun", "Sunday", "Su", "7"},
}

// weekdaysOpt returns "[!] --weekdays LIST" whose set holds both today
// and yesterday (which --contiguous looks at after midnight), or neither.
func (g *ruleGen) weekdaysOpt(now time.Time, in bool) string {
	x := g.x
	today := (int(now.Weekday())+6)%7 + 1 // Monday 1 .. Sunday 7
	yesterday := (today+5)%7 + 1
	set := map[int]bool{}
	for range 1 + x.IntN(3) {
		set[1+x.IntN(7)] = true
	}
	set[today], set[yesterday] = in, in
	inv := x.IntN(4) == 0
	if inv { // the list is the complement of the set
		for d := 1; d <= 7; d++ {
			set[d] = !set[d]
		}
	}
	var list []string
	for d := 1; d <= 7; d++ {
		if set[d] {
			list = append(list, weekdaySpellings[d][x.IntN(4)])
		}
	}
	if len(list) == 0 {
		return g.weekdaysOpt(now, in)
	}
	x.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	opt := "--weekdays " + strings.Join(list, ",")
	if inv {
		opt = "! " + opt
	}
	return opt
}

// monthdaysOpt returns "[!] --monthdays LIST" whose set holds both
// today's and yesterday's day of the month, or neither.
func (g *ruleGen) monthdaysOpt(now time.Time, in bool) string {
	x := g.x
	today, yesterday := now.Day(), now.AddDate(0, 0, -1).Day()
	set := map[int]bool{}
	for range 1 + x.IntN(4) {
		set[[]int{1 + x.IntN(31), today - 2, today + 1, 31, 29}[x.IntN(5)]] = true
	}
	set[today], set[yesterday] = in, in
	inv := x.IntN(4) == 0
	if inv {
		for d := 1; d <= 31; d++ {
			set[d] = !set[d]
		}
	}
	var list []string
	for d := 1; d <= 31; d++ {
		if set[d] {
			list = append(list, strconv.Itoa(d))
		}
	}
	if len(list) == 0 {
		return g.monthdaysOpt(now, in)
	}
	x.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	opt := "--monthdays " + strings.Join(list, ",")
	if inv {
		opt = "! " + opt
	}
	return opt
}

// dateAway returns a --datestart/--datestop value at least margin seconds
// after now (or before it), in one of the spellings iptables accepts (YYYY,
// YYYY-MM, ..., YYYY-MM-DDThh:mm:ss), within the years it accepts.
func (g *ruleGen) dateAway(now time.Time, margin int64, after bool) string {
	x := g.x
	for {
		var d time.Duration
		switch x.IntN(3) {
		case 0:
			d = time.Duration(2+x.IntN(60)) * time.Hour
		case 1:
			d = time.Duration(1+x.IntN(800)) * 24 * time.Hour
		default:
			d = time.Duration(x.Int64N(int64(20 * 365 * 24 * time.Hour)))
		}
		if !after {
			d = -d
		}
		t := now.Add(d)
		if t.Year() < 1970 || t.Year() > 2037 {
			continue
		}
		layout := []string{"2006", "2006-01", "2006-01-02", "2006-01-02T15", "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02T15:04:05"}[x.IntN(7)]
		text := t.Format(layout)
		parsed, err := time.Parse(layout, text)
		if err != nil {
			panic(err) // a layout that does not read its own output
		}
		if diff := parsed.Unix() - now.Unix(); after && diff > margin || !after && -diff > margin {
			return text
		}
	}
}
