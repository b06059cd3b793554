package matchers

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

const defaultStop = " --datestop 2038-01-19T03:14:07"

// The save and list forms are what iptables 1.8.9 (nf_tables) prints; the
// "iptables" subtests check each against the installed one.
func TestTimeFormats(t *testing.T) {
	runFmtVectors(t, "time", []fmtVector{
		{opts: "", save: defaultStop, listN: " TIME UTC"},
		{opts: "--timestart 02:00:00 --timestop 03:00:00 --datestart 1970-01-01T02:00:00 --datestop 1970-01-01T03:00:00",
			save:  " --timestart 02:00:00 --timestop 03:00:00 --datestart 1970-01-01T02:00:00 --datestop 1970-01-01T03:00:00",
			listN: " TIME from 02:00:00 to 03:00:00 starting from 1970-01-01 02:00:00 until date 1970-01-01 03:00:00 UTC"},
		{opts: "--timestart 22:00 --timestop 02:00 --contiguous --kerneltz",
			save:  " --timestart 22:00:00 --timestop 02:00:00" + defaultStop + " --kerneltz --contiguous",
			listN: " TIME from 22:00:00 to 02:00:00 contiguous"},
		{opts: "--weekdays Mon,Sunday,3 --monthdays 31,1,15",
			save:  " --monthdays 1,15,31 --weekdays Mon,Wed,Sun" + defaultStop,
			listN: " TIME on Mon,Wed,Sun on 1st,15th,31st UTC"},
		{opts: "! --weekdays Mon,Tu ! --monthdays 1",
			save:  " --monthdays 2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31 --weekdays Wed,Thu,Fri,Sat,Sun" + defaultStop,
			listN: " TIME on Wed,Thu,Fri,Sat,Sun on 2nd,3rd,4th,5th,6th,7th,8th,9th,10th,11st,12nd,13rd,14th,15th,16th,17th,18th,19th,20th,21st,22nd,23rd,24th,25th,26th,27th,28th,29th,30th,31st UTC"},
		{opts: "--weekdays 10", save: " --weekdays " + defaultStop, listN: " TIME on  UTC"},
		{opts: "--weekdays 0x3,07", save: " --weekdays Wed,Sun" + defaultStop, listN: " TIME on Wed,Sun UTC"},
		{opts: "--monthdays 0", save: " --monthdays " + defaultStop, listN: " TIME on  UTC"},
		{opts: "--monthdays 123", save: " --monthdays 12" + defaultStop, listN: " TIME on 12nd UTC"},
		{opts: "--monthdays 1,,2", save: " --monthdays 1,2" + defaultStop, listN: " TIME on 1st,2nd UTC"},
		{opts: "--monthdays 3,", save: " --monthdays 3" + defaultStop, listN: " TIME on 3rd UTC"},
		{opts: "--datestart 2020-", save: " --datestart 2019-12-01T00:00:00" + defaultStop, listN: " TIME starting from 2019-12-01 00:00:00 UTC"},
		{opts: "--datestart 2020-01-01T", save: " --datestart 2020-01-01T00:00:00" + defaultStop, listN: " TIME starting from 2020-01-01 00:00:00 UTC"},
		{opts: "--datestart 2021-02-31", save: " --datestart 2021-03-03T00:00:00" + defaultStop, listN: " TIME starting from 2021-03-03 00:00:00 UTC"},
		{opts: "--datestart 2038-12-31T23:59:59", save: " --datestart 2038-12-31T23:59:59" + defaultStop, listN: " TIME starting from 2038-12-31 23:59:59 UTC"},
		{opts: "--datestart 1970-01-01 --datestop 1970-01-01", save: "", listN: " TIME until date UTC"},
		{opts: "--datestop 2038-01-19T03:14:07", save: defaultStop, listN: " TIME UTC"},
		{opts: "--datestop 2038-01-19T03:14:08", save: " --datestop 2038-01-19T03:14:08", listN: " TIME until date 2038-01-19 03:14:08 UTC"},
		{opts: "--timestart 4294967296:00", save: defaultStop, listN: " TIME UTC"},
		{opts: "--timestart 12:", save: " --timestart 12:00:00 --timestop 23:59:59" + defaultStop, listN: " TIME from 12:00:00 to 23:59:59 UTC"},
		{opts: "--timestart +1:2:3", save: " --timestart 01:02:03 --timestop 23:59:59" + defaultStop, listN: " TIME from 01:02:03 to 23:59:59 UTC"},
		{opts: "--timestart 10:00 --timestop 10:00", save: " --timestart 10:00:00 --timestop 10:00:00" + defaultStop, listN: " TIME from 10:00:00 to 10:00:00 UTC"},
		{opts: "--timestop 00:00 --contiguous", save: " --timestart 00:00:00 --timestop 00:00:00" + defaultStop + " --contiguous", listN: " TIME from 00:00:00 to 00:00:00 UTC contiguous"},
		{opts: "--utc", save: defaultStop, listN: " TIME UTC"},
		{opts: "--kerneltz --localtz", save: defaultStop + " --kerneltz", listN: " TIME"},
	})
}

func TestTimeErrors(t *testing.T) {
	runErrVectors(t, "time", []errVector{
		{opts: "--timestart 02:00 --timestop 22:00 --contiguous", err: "--contiguous only makes sense"},
		{opts: "--weekdays 0", err: "does NOT begin with Sunday"},
		{opts: "--weekdays mon", err: "not a valid day specifier"},
		{opts: "--weekdays M", err: "not a valid day specifier"},
		{opts: "--weekdays 1,,2", err: "does NOT begin with Sunday"},
		{opts: "--monthdays 32", err: "not a valid day for --monthdays"},
		{opts: "--monthdays -1", err: "not a valid day for --monthdays"},
		{opts: "--monthdays 0x", err: "not a valid day for --monthdays"},
		{opts: "--datestop 2039", err: "Invalid date"},
		{opts: "--datestart 1969", err: "Invalid date"},
		{opts: "--datestart 1970-00", err: "mktime"},
		{opts: "--datestart 2020-13", err: "Invalid date"},
		{opts: "--datestart 2020--3", err: "Invalid date"},
		{opts: "--datestart 2020-01-01T00:00:00x", err: "Invalid date"},
		{opts: "--datestart 2020/01", err: "Invalid date"},
		{opts: "--timestart 12", err: "invalid time"},
		{opts: "--timestart 24:00", err: "invalid time"},
		{opts: "--timestart 12:60", err: "invalid time"},
		{opts: "--timestart 12:00:60", err: "invalid time"},
		{opts: "--timestart -1:00", err: "invalid time"},
		{opts: "--timestart 18446744073709551616:00", err: "invalid time"},
		{opts: "--utc --kerneltz", err: "cannot be used together"},
		{opts: "--localtz --utc", err: "cannot be used together"},
	})
}

// at returns a Context whose clock reads the given UTC time.
func at(s string) *Context {
	tm, err := time.Parse("2006-01-02T15:04:05", s)
	if err != nil {
		panic(err)
	}
	c := ctxFor(pkt{proto: 17, l4: udpHdr(1, 2)}.view())
	c.Now = tm
	return c
}

func TestTimeMatch(t *testing.T) {
	cases := []struct {
		opts, now string
		want      bool
	}{
		{"", "2026-11-26T11:00:00", true},
		// 2026-11-26 is a Thursday.
		{"--weekdays Thu", "2026-11-26T00:00:00", true},
		{"--weekdays Thu", "2026-11-26T23:59:59", true},
		{"--weekdays Thu", "2026-11-27T00:00:00", false},
		{"! --weekdays Thu", "2026-11-26T12:00:00", false},
		{"--weekdays 7", "2026-11-29T12:00:00", true}, // Sunday
		{"--monthdays 26", "2026-11-26T12:00:00", true},
		{"--monthdays 25,27", "2026-11-26T12:00:00", false},
		{"--monthdays 29", "2028-02-29T12:00:00", true},
		{"--monthdays 1", "2028-03-01T00:00:00", true},
		{"--monthdays 31", "2026-12-31T23:59:59", true},
		{"--monthdays 0", "2026-11-26T12:00:00", false},
		// window [start, stop], both ends included
		{"--timestart 10:00 --timestop 12:00", "2026-11-26T10:00:00", true},
		{"--timestart 10:00 --timestop 12:00", "2026-11-26T12:00:00", true},
		{"--timestart 10:00 --timestop 12:00", "2026-11-26T12:00:01", false},
		{"--timestart 10:00 --timestop 12:00", "2026-11-26T09:59:59", false},
		// crossing midnight
		{"--timestart 22:00 --timestop 02:00", "2026-11-26T23:00:00", true},
		{"--timestart 22:00 --timestop 02:00", "2026-11-26T01:00:00", true},
		{"--timestart 22:00 --timestop 02:00", "2026-11-26T02:00:01", false},
		{"--timestart 22:00 --timestop 02:00", "2026-11-26T21:59:59", false},
		// start == stop is the whole day
		{"--timestart 10:00 --timestop 10:00", "2026-11-26T03:00:00", true},
		// the after-midnight part belongs to the previous day with
		// --contiguous only
		{"--timestart 22:00 --timestop 02:00 --weekdays Wed", "2026-11-26T01:00:00", false},
		{"--timestart 22:00 --timestop 02:00 --weekdays Wed --contiguous", "2026-11-26T01:00:00", true},
		{"--timestart 22:00 --timestop 02:00 --weekdays Thu --contiguous", "2026-11-26T01:00:00", false},
		{"--timestart 22:00 --timestop 02:00 --weekdays Thu --contiguous", "2026-11-26T23:00:00", true},
		{"--timestart 22:00 --timestop 02:00 --monthdays 25 --contiguous", "2026-11-26T01:00:00", true},
		// date bounds are inclusive
		{"--datestart 2026-11-26T11:00:00", "2026-11-26T11:00:00", true},
		{"--datestart 2026-11-26T11:00:01", "2026-11-26T11:00:00", false},
		{"--datestop 2026-11-26T11:00:00", "2026-11-26T11:00:00", true},
		{"--datestop 2026-11-26T10:59:59", "2026-11-26T11:00:00", false},
		// the default stop is INT_MAX
		{"", "2038-01-19T03:14:07", true},
		{"", "2038-01-19T03:14:08", false},
		{"--datestop 2038-12-31", "2038-06-01T00:00:00", true},
	}
	for _, tc := range cases {
		m := mustBuild(t, "time", ruleAny, tc.opts)
		if got := m.Match(at(tc.now)); got != tc.want {
			t.Errorf("-m time %s at %s: Match = %v, want %v", tc.opts, tc.now, got, tc.want)
		}
	}
}

// TestTimeKernelTZ checks that --kerneltz shifts by the local zone's
// offset at that instant.
func TestTimeKernelTZ(t *testing.T) {
	old := time.Local
	t.Cleanup(func() { time.Local = old })
	time.Local = time.FixedZone("east", 2*3600)
	m := mustBuild(t, "time", ruleAny, "--timestart 00:30 --timestop 01:30 --weekdays Fri --kerneltz")
	// 23:00 UTC on Thursday is 01:00 on Friday two hours east.
	if !m.Match(at("2026-11-26T23:00:00")) {
		t.Error("--kerneltz: 23:00 UTC Thu should be 01:00 Fri local")
	}
	u := mustBuild(t, "time", ruleAny, "--timestart 00:30 --timestop 01:30 --weekdays Fri")
	if u.Match(at("2026-11-26T23:00:00")) {
		t.Error("without --kerneltz the test is in UTC")
	}
}

// TestTimeMonthdayTable compares the kernel's table-driven month day with
// the calendar for every day up to the table's end (2039-12-31); after it
// the kernel's count runs on past the 31st, and so does qtables'.
func TestTimeMonthdayTable(t *testing.T) {
	if got := monthday(daysSinceEpoch[0] + 365); got != 32 {
		t.Errorf("2040-01-01: monthday %d, want the kernel's 32", got)
	}
	for d := uint32(0); d < daysSinceEpoch[0]+365; d++ {
		want := time.Unix(int64(d)*secondsPerDay, 0).UTC().Day()
		if got := monthday(d); int(got) != want {
			t.Fatalf("day %d (%s): monthday %d, want %d", d, time.Unix(int64(d)*secondsPerDay, 0).UTC().Format(time.DateOnly), got, want)
		}
	}
}

func BenchmarkTimeMatch(b *testing.B) {
	m := mustBuild(b, "time", ruleAny, "--timestart 22:00 --timestop 02:00 --weekdays Mon,Tue --monthdays 1,15 --contiguous --kerneltz")
	c := at("2026-11-26T23:00:00")
	b.ReportAllocs()
	for b.Loop() {
		c.Now = c.Now.Add(time.Second)
		m.Match(c)
	}
}

// TestTimeKernel runs time rules around the current moment through the
// kernel: windows whose edges fall a few seconds before or after now, on
// today's and neighbouring weekdays and month days, with and without
// --contiguous and --kerneltz. Each datagram is sent between two readings
// of the clock; a rule counts only where qtables gives the same answer at
// both (the kernel reads the clock in between, at one-second resolution).
func TestTimeKernel(t *testing.T) {
	k := newKernelPath(t)
	r := rand.New(rand.NewPCG(3, 9))
	hms := func(tm time.Time) string { return tm.UTC().Format("15:04:05") }
	for round := 0; round < 3; round++ {
		now := time.Now()
		var texts []string
		var ms []Match
		for range 60 {
			var opts []string
			off := func() time.Duration { return time.Duration(r.IntN(7200)-3600) * time.Second }
			switch r.IntN(4) {
			case 0:
				opts = append(opts, "--timestart", hms(now.Add(off())), "--timestop", hms(now.Add(off())))
			case 1:
				opts = append(opts, "--timestart", hms(now.Add(time.Duration(5+r.IntN(60))*time.Second)), "--timestop", hms(now.Add(-time.Duration(5+r.IntN(60))*time.Second)))
			}
			if len(opts) == 4 && r.IntN(3) == 0 {
				start, _ := parseDaytime(opts[1])
				stop, _ := parseDaytime(opts[3])
				if start >= stop {
					opts = append(opts, "--contiguous")
				}
			}
			if r.IntN(3) == 0 {
				d := now.UTC().Add(time.Duration(r.IntN(3)-1) * 24 * time.Hour)
				opts = append(opts, "--weekdays", d.Weekday().String()[:3])
			}
			if r.IntN(4) == 0 {
				d := now.UTC().Add(time.Duration(r.IntN(3)-1) * 24 * time.Hour)
				opts = append(opts, "--monthdays", fmt.Sprint(d.Day()))
			}
			if r.IntN(4) == 0 {
				opts = append(opts, "--datestart", now.Add(off()/60).UTC().Format("2006-01-02T15:04:05"))
			}
			if r.IntN(4) == 0 {
				opts = append(opts, "--datestop", now.Add(off()/60).UTC().Format("2006-01-02T15:04:05"))
			}
			// The kernel's timezone cannot be read from here: --kerneltz
			// only where the local zone is UTC, as the kernel's then is
			// unless set otherwise at boot.
			if _, offset := now.Zone(); offset == 0 && r.IntN(5) == 0 {
				opts = append(opts, "--kerneltz")
			}
			m, err := buildMatch("time", ruleAny, opts...)
			if err != nil {
				t.Fatalf("%q: %v", opts, err)
			}
			ms = append(ms, m)
			texts = append(texts, "-m time "+strings.Join(opts, " "))
		}
		k.load(t, texts)
		c := ctxFor(pkt{proto: 17, l4: udpHdr(1, 2)}.view())
		c.Now = time.Now()
		before := make([]bool, len(ms))
		for i, m := range ms {
			before[i] = m.Match(c)
		}
		k.send(t, rawDatagram(1, nil))
		c.Now = time.Now()
		got := k.counts(t)
		checked := 0
		for i, m := range ms {
			if after := m.Match(c); after != before[i] {
				continue
			}
			checked++
			if want := b2u(before[i]); got[i] != want {
				t.Errorf("%s at %s: the kernel counts %d, qtables %d", texts[i], c.Now.UTC().Format(time.RFC3339), got[i], want)
			}
		}
		if checked < len(ms)/2 {
			t.Errorf("only %d of %d rules were decided", checked, len(ms))
		}
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
