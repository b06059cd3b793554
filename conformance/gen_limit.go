package conformance

import (
	"strconv"
	"strings"
)

// Limit matches for the generator. iptables-nft installs them as nftables
// limit expressions whose bucket starts full and refills continuously, so
// a rule's count depends on how fast packets arrive unless the refill is
// slow next to a case's sending time. Every rate here costs at least ten
// seconds per packet: a case, sent within a second or so, gets exactly
// min(burst, packets reaching the match) through each limit, on the kernel
// and in qtables (which reads the pcap's timestamps, a microsecond apart),
// and every run starts afresh because loading the rule set makes new
// buckets.

// limitRates are rate spellings of at least ten seconds per packet, with
// the unit abbreviations iptables accepts and rates it re-expresses
// (120/hour is 2/min).
var limitRates = []string{
	"1/min", "2/m", "6/minute", "2/Min", "3/hour", "1/h", "360/hour", "120/hour", "7/HOUR",
	"1/day", "10/d", "8640/day", "1000/day",
}

// limitOpt returns "-m limit ..." with a rate (or the default 3/hour) and
// a burst (or the default 5; 0 is taken as 5).
func (g *ruleGen) limitOpt() string {
	x := g.x
	var opts []string
	if x.IntN(5) > 0 {
		opts = append(opts, "--limit "+limitRates[x.IntN(len(limitRates))])
	}
	if x.IntN(3) > 0 {
		burst := []int{0, 1, 1, 2, 3, 5, 7, 10, 20, 100}[x.IntN(10)]
		opts = append(opts, "--limit-burst "+strconv.Itoa(burst))
	}
	x.Shuffle(len(opts), func(i, j int) { opts[i], opts[j] = opts[j], opts[i] })
	if len(opts) == 0 {
		return "-m limit"
	}
	return "-m limit " + strings.Join(opts, " ")
}
