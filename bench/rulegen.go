package bench

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// RuleSpec describes a generated rule set: Rules filters whose shape
// follows one of ClassBench's seed families (the distributions below were
// measured on the acl1, fw1 and ipc1 10k sets), then written as iptables
// rules by Emit.
type RuleSpec struct {
	// Kind is "acl" (access control lists: TCP, host /32 and /31 pairs,
	// exact destination ports), "fw" (firewalls: many wildcard and /1
	// prefixes, TCP and UDP, service ports both ways) or "ipc" (IP chains:
	// UDP and any-protocol rules over /23-/25 networks).
	Kind  string
	Rules int
	Seed  uint64
	// Chains, Comments, Actions and Policy: see EmitOptions and SetActions.
	Chains   int
	Comments int
	Actions  string
	Policy   string
}

// DefaultRuleSpec is a 1000-rule ACL, whitelist style.
func DefaultRuleSpec() RuleSpec {
	return RuleSpec{Kind: "acl", Rules: 1000, Seed: 1, Actions: "accept", Policy: "DROP"}
}

// ParseRuleSpec reads "KIND[,key=value...]" over the defaults: the kind
// acl, fw or ipc, and rules=N, seed=N, chains=N, comments=N,
// actions=accept|alternate, policy=DROP|ACCEPT.
func ParseRuleSpec(s string) (RuleSpec, error) {
	sp := DefaultRuleSpec()
	for i, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			if i == 0 {
				sp.Kind = kv
				continue
			}
			return sp, fmt.Errorf("rule spec: %q is not key=value", kv)
		}
		var err error
		switch k {
		case "kind":
			sp.Kind = v
		case "rules":
			sp.Rules, err = strconv.Atoi(v)
		case "seed":
			sp.Seed, err = strconv.ParseUint(v, 10, 64)
		case "chains":
			sp.Chains, err = strconv.Atoi(v)
		case "comments":
			sp.Comments, err = strconv.Atoi(v)
		case "actions":
			sp.Actions = v
		case "policy":
			sp.Policy = strings.ToUpper(v)
		default:
			return sp, fmt.Errorf("rule spec: unknown key %q", k)
		}
		if err != nil {
			return sp, fmt.Errorf("rule spec: %s: %v", k, err)
		}
	}
	if _, ok := families[sp.Kind]; !ok {
		return sp, fmt.Errorf("rule spec: kind %q: acl, fw or ipc expected", sp.Kind)
	}
	if sp.Rules < 1 || sp.Chains < 0 || sp.Comments < 0 {
		return sp, fmt.Errorf("rule spec: rules must be positive, chains and comments non-negative")
	}
	if sp.Actions != "accept" && sp.Actions != "alternate" {
		return sp, fmt.Errorf("rule spec: actions %q: accept or alternate expected", sp.Actions)
	}
	if sp.Policy != "DROP" && sp.Policy != "ACCEPT" {
		return sp, fmt.Errorf("rule spec: policy %q: DROP or ACCEPT expected", sp.Policy)
	}
	return sp, nil
}

func (sp RuleSpec) String() string {
	return fmt.Sprintf("%s,rules=%d,seed=%d,chains=%d,comments=%d,actions=%s,policy=%s",
		sp.Kind, sp.Rules, sp.Seed, sp.Chains, sp.Comments, sp.Actions, sp.Policy)
}

// weighted is a discrete distribution: values with integer weights.
type weighted[T any] struct {
	vals []T
	w    []int
	sum  int
}

func dist[T any](pairs ...any) weighted[T] {
	var d weighted[T]
	for i := 0; i < len(pairs); i += 2 {
		d.vals = append(d.vals, pairs[i].(T))
		d.w = append(d.w, pairs[i+1].(int))
		d.sum += pairs[i+1].(int)
	}
	return d
}

func (d *weighted[T]) pick(r *rand.Rand) T {
	k := r.IntN(d.sum)
	for i, w := range d.w {
		if k < w {
			return d.vals[i]
		}
		k -= w
	}
	return d.vals[len(d.vals)-1]
}

// Port range classes, as ClassBench names them.
const (
	portWC = iota // wildcard 0:65535
	portHI        // 1024:65535
	portLO        // 0:1023
	portEM        // one port
	portAR        // an arbitrary range
)

// family is one seed family's distributions; weights are per mille of the
// measured 10k sets, rounded.
type family struct {
	proto      weighted[int]
	srcLen     weighted[int]
	dstLen     weighted[int]
	sport      weighted[int]
	dport      weighted[int]
	ports      []uint16 // popular exact ports, most frequent first
	sitesPerKF int      // address sites per 1000 filters
}

var families = map[string]*family{
	"acl": {
		proto:  dist[int](6, 873, 0, 83, 1, 30, 17, 13),
		srcLen: dist[int](32, 539, 31, 247, 23, 72, 30, 48, 24, 46, 22, 24, 29, 9, 25, 6, 0, 3, 8, 2),
		dstLen: dist[int](32, 509, 31, 201, 22, 67, 30, 45, 23, 41, 24, 21, 21, 19, 25, 18, 16, 11, 17, 8, 15, 8, 0, 5, 28, 5, 26, 5),
		sport:  dist[int](portWC, 1000),
		dport:  dist[int](portEM, 604, portWC, 281, portAR, 115),
		ports: []uint16{1521, 1526, 1221, 1433, 135, 1525, 14753, 1711, 1724, 1704, 1717, 1708, 20, 1712, 1705,
			21, 22, 23, 25, 80, 443, 3306, 8080},
		sitesPerKF: 20,
	},
	"fw": {
		proto:      dist[int](6, 570, 17, 334, 47, 48, 1, 36, 0, 12),
		srcLen:     dist[int](0, 413, 1, 195, 32, 126, 31, 91, 30, 32, 2, 29, 28, 19, 29, 17, 27, 15, 21, 9, 22, 8, 26, 8, 23, 7, 20, 7),
		dstLen:     dist[int](32, 326, 31, 277, 0, 184, 1, 94, 30, 61, 2, 12, 28, 9, 22, 8, 21, 7, 29, 7, 27, 7, 20, 4),
		sport:      dist[int](portWC, 765, portEM, 153, portHI, 81, portAR, 1),
		dport:      dist[int](portEM, 629, portWC, 288, portHI, 82, portAR, 1),
		ports:      []uint16{22, 80, 25, 53, 123, 544, 2105, 21, 750, 161, 443, 23, 119, 88, 7648, 24032},
		sitesPerKF: 8,
	},
	"ipc": {
		proto:      dist[int](17, 381, 0, 328, 6, 275, 1, 11, 47, 3, 50, 1, 51, 1),
		srcLen:     dist[int](32, 170, 24, 141, 23, 141, 25, 88, 31, 82, 0, 77, 22, 53, 1, 49, 26, 39, 16, 34, 17, 26, 27, 22, 28, 16, 15, 15),
		dstLen:     dist[int](32, 250, 24, 123, 31, 113, 25, 100, 23, 72, 0, 61, 26, 55, 16, 44, 1, 29, 27, 29, 15, 25, 17, 23, 28, 21, 22, 18),
		sport:      dist[int](portWC, 810, portEM, 169, portAR, 18, portHI, 3),
		dport:      dist[int](portWC, 555, portEM, 360, portHI, 60, portAR, 25),
		ports:      []uint16{69, 514, 80, 9003, 53, 25, 1433, 137, 162, 113, 143, 161, 22, 119, 139},
		sitesPerKF: 30,
	},
}

// GenerateFilters returns sp.Rules filters of sp.Kind's shape, in scope
// order (the most specific first, as ClassBench orders its sets), with
// actions set. The same spec always gives the same filters; the filters of
// a smaller spec are not a prefix of a larger one's (sizes are generated,
// not truncated).
//
// Addresses come from a pool of sites, /16 networks each with a few /24
// subnets, so that prefixes nest and overlap as in real sets and as
// ClassBench's prefix trees make them; prefixes shorter than /16 are
// random.
func GenerateFilters(sp RuleSpec) ([]Filter, error) {
	fam, ok := families[sp.Kind]
	if !ok {
		return nil, fmt.Errorf("rule kind %q: acl, fw or ipc expected", sp.Kind)
	}
	r := rand.New(rand.NewPCG(sp.Seed, sp.Seed^0x5851f42d4c957f2d))
	nsites := max(4, sp.Rules*fam.sitesPerKF/1000)
	type site struct {
		base uint32
		subs []uint32
	}
	sites := make([]site, nsites)
	for i := range sites {
		base := r.Uint32() & 0xffff0000
		// Keep clear of 0/8, loopback and multicast: sets are unicast.
		base = base&0x7fffffff | 0x01000000
		for base>>24 == 127 {
			base += 1 << 24
		}
		s := site{base: base}
		for j := 0; j < 4+r.IntN(12); j++ {
			s.subs = append(s.subs, base|uint32(r.IntN(256))<<8)
		}
		sites[i] = s
	}
	// Sites are picked with a skew (site k with weight 1/(k+1)) so that a
	// few networks hold many rules, as in real sets.
	var siteW weighted[int]
	for i := range sites {
		siteW.vals = append(siteW.vals, i)
		w := 1000 / (i + 1)
		siteW.w = append(siteW.w, max(1, w))
		siteW.sum += max(1, w)
	}
	prefix := func(bits int) netip.Prefix {
		var a uint32
		s := sites[siteW.pick(r)]
		switch {
		case bits >= 24:
			a = s.subs[r.IntN(len(s.subs))] | uint32(r.IntN(256))
		case bits >= 16:
			a = s.base | uint32(r.IntN(65536))
		default:
			a = r.Uint32()
		}
		return netip.PrefixFrom(addrFrom(a), bits).Masked()
	}
	portRange := func(class int) PortRange {
		switch class {
		case portHI:
			return PortRange{1024, 65535}
		case portLO:
			return PortRange{0, 1023}
		case portEM:
			if r.IntN(10) < 7 {
				// Popular ports with a skew towards the head of the list.
				p := fam.ports[min(r.IntN(len(fam.ports)), r.IntN(len(fam.ports)))]
				return PortRange{p, p}
			}
			p := uint16(1 + r.IntN(65535))
			return PortRange{p, p}
		case portAR:
			lo := r.IntN(60000)
			hi := min(65535, lo+1+r.IntN(2000))
			return PortRange{uint16(lo), uint16(hi)}
		}
		return AnyPort
	}
	fs := make([]Filter, sp.Rules)
	for i := range fs {
		f := Filter{Orig: i, SPort: AnyPort, DPort: AnyPort}
		f.Proto = uint8(fam.proto.pick(r))
		f.Src = prefix(fam.srcLen.pick(r))
		f.Dst = prefix(fam.dstLen.pick(r))
		if f.Proto == 6 || f.Proto == 17 {
			f.SPort = portRange(fam.sport.pick(r))
			f.DPort = portRange(fam.dport.pick(r))
		}
		fs[i] = f
	}
	// ClassBench writes a set from the most specific filter to the least
	// (in acl1, fw1 and ipc1 under 4% of filter pairs are out of scope
	// order; TestClassBenchScopeOrder), as firewalls are written: in
	// generation order a wide filter early on would shadow most of the
	// set, and traffic would be decided, linearly, by its first few rules.
	slices.SortStableFunc(fs, func(a, b Filter) int { return cmp.Compare(a.Scope(), b.Scope()) })
	for i := range fs {
		fs[i].Orig = i
	}
	if err := SetActions(fs, sp.Actions); err != nil {
		return nil, err
	}
	return fs, nil
}

// GenerateRules returns the rule set of sp as an iptables-restore file and
// its filters in evaluation order (see Emit).
func GenerateRules(sp RuleSpec, chain string) (string, []Filter, error) {
	fs, err := GenerateFilters(sp)
	if err != nil {
		return "", nil, err
	}
	return Emit(fs, EmitOptions{Chain: chain, Policy: sp.Policy, Chains: sp.Chains, Comments: sp.Comments})
}

func addrFrom(a uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}

func addrBits(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
