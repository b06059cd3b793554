package queue

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"

	"github.com/qtables/qtables/matchers"
)

// ChainPrefix starts the name of every chain qtables installs in the kernel.
// Chains with this prefix in the filter and mangle tables belong to qtables:
// Install replaces them and Remove deletes them.
const ChainPrefix = "QTABLES-"

// IPTables is the part of go-iptables' *iptables.IPTables that Hooks uses.
// Tests substitute an in-memory fake; the daemon uses the real binary,
// which acts on the network namespace of the calling process.
type IPTables interface {
	ListChains(table string) ([]string, error)
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	List(table, chain string) ([]string, error)
	ListWithCounters(table, chain string) ([]string, error)
	Append(table, chain string, rulespec ...string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	DeleteById(table, chain string, id int) error
	ClearAndDeleteChain(table, chain string) error
}

// NewIPTables returns go-iptables for IPv4, waiting for the xtables lock
// rather than failing when another iptables command holds it.
func NewIPTables() (IPTables, error) {
	ipt, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Timeout(10))
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	return ipt, nil
}

// HookTable is the kernel table that holds the hook chain for h: mangle for
// PREROUTING and POSTROUTING (filter has no such chains), filter otherwise.
func HookTable(h matchers.Hook) string {
	if h == matchers.HookPrerouting || h == matchers.HookPostrouting {
		return "mangle"
	}
	return "filter"
}

// HookChain is the name of qtables' chain for h ("QTABLES-FORWARD").
func HookChain(h matchers.Hook) string { return ChainPrefix + h.String() }

// ParseHook returns the hook whose built-in chain is called name (any case).
func ParseHook(name string) (matchers.Hook, error) {
	h, ok := matchers.HookByName(strings.ToUpper(name))
	if !ok {
		return matchers.HookNone, fmt.Errorf("unknown hook %q (want PREROUTING, INPUT, FORWARD, OUTPUT or POSTROUTING)", name)
	}
	return h, nil
}

// QueueRange is the contiguous range of NFQUEUE numbers the hooks spread
// packets over (--queue-balance First:Last, or --queue-num when one).
type QueueRange struct {
	First, Last uint16
}

// ParseQueueRange parses "N" or "N-M" (or "N:M", iptables' spelling).
func ParseQueueRange(s string) (QueueRange, error) {
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		lo, hi, found = strings.Cut(s, ":")
	}
	first, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return QueueRange{}, fmt.Errorf("queue range %q: bad queue number %q", s, lo)
	}
	last := first
	if found {
		last, err = strconv.ParseUint(hi, 10, 16)
		if err != nil {
			return QueueRange{}, fmt.Errorf("queue range %q: bad queue number %q", s, hi)
		}
	}
	if last < first {
		return QueueRange{}, fmt.Errorf("queue range %q: last queue before first", s)
	}
	return QueueRange{First: uint16(first), Last: uint16(last)}, nil
}

// Len is the number of queues in the range.
func (r QueueRange) Len() int { return int(r.Last) - int(r.First) + 1 }

func (r QueueRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// HookConfig says which hooks to install and what their NFQUEUE rule does.
type HookConfig struct {
	Hooks  []matchers.Hook
	Queues QueueRange
	// Bypass adds --queue-bypass: while no program is bound to the queue
	// the kernel accepts the packets instead of dropping them.
	Bypass bool
	// CPUFanout adds --queue-cpu-fanout (only with more than one queue):
	// the queue is chosen by CPU rather than by flow hash.
	CPUFanout bool
	// OffloadMask, when non-zero, puts the connmark fast path before the
	// NFQUEUE rule: a connection whose mark has these bits is accepted by
	// the kernel without queueing, and a packet the daemon hands back
	// (NF_REPEAT) with these bits in its packet mark has them saved to its
	// connection's mark. The bits are qtables' own: other users of the
	// packet and connection marks keep theirs.
	OffloadMask uint32
}

// ChainSpecs are the rules of a hook chain in order, as go-iptables takes
// them: the fast path (with OffloadMask) and the NFQUEUE rule.
func (c HookConfig) ChainSpecs() [][]string {
	var specs [][]string
	if c.OffloadMask != 0 {
		m := markArg(c.OffloadMask, c.OffloadMask)
		specs = append(specs,
			[]string{"-m", "connmark", "--mark", m, "-j", "ACCEPT"},
			[]string{"-m", "mark", "--mark", m, "-j", "CONNMARK", "--set-xmark", fmt.Sprintf("0x%x/0x%x", c.OffloadMask, c.OffloadMask)},
			[]string{"-m", "mark", "--mark", m, "-j", "ACCEPT"},
		)
	}
	return append(specs, c.QueueRuleSpec())
}

// markArg is VALUE/MASK as iptables -S prints a mark match (no mask when
// it is all ones).
func markArg(value, mask uint32) string {
	if mask == 0xffffffff {
		return fmt.Sprintf("0x%x", value)
	}
	return fmt.Sprintf("0x%x/0x%x", value, mask)
}

// QueueRuleSpec is the NFQUEUE rule of a hook chain, as go-iptables takes
// it (and as iptables -S prints it after "-A CHAIN").
func (c HookConfig) QueueRuleSpec() []string {
	spec := []string{"-j", "NFQUEUE"}
	if c.Queues.First == c.Queues.Last {
		spec = append(spec, "--queue-num", strconv.Itoa(int(c.Queues.First)))
	} else {
		spec = append(spec, "--queue-balance", fmt.Sprintf("%d:%d", c.Queues.First, c.Queues.Last))
	}
	if c.Bypass {
		spec = append(spec, "--queue-bypass")
	}
	if c.CPUFanout && c.Queues.First != c.Queues.Last {
		spec = append(spec, "--queue-cpu-fanout")
	}
	return spec
}

// Validate checks the hook list for duplicates and unknown hooks.
func (c HookConfig) Validate() error {
	if len(c.Hooks) == 0 {
		return errors.New("no hook given (--hook INPUT, --hook FORWARD, ...)")
	}
	seen := map[matchers.Hook]bool{}
	for _, h := range c.Hooks {
		if h > matchers.HookPostrouting {
			return fmt.Errorf("unknown hook %d", h)
		}
		if seen[h] {
			return fmt.Errorf("hook %s given twice", h)
		}
		seen[h] = true
	}
	if c.CPUFanout && c.Queues.First == c.Queues.Last {
		return errors.New("--queue-cpu-fanout needs more than one queue")
	}
	return nil
}

// jumpSpec is the rule in the built-in chain that enters the hook chain.
func jumpSpec(h matchers.Hook) []string { return []string{"-j", HookChain(h)} }

// ruleLine is how iptables -S prints a rule appended to chain with spec.
func ruleLine(chain string, spec []string) string {
	return "-A " + chain + " " + strings.Join(spec, " ")
}

// Install puts the hook chains of cfg into the kernel and returns once
// every hook is live. A chain left by an earlier run (a killed daemon, a
// different queue range) is replaced without a gap: the new rules are
// appended before the old rules are deleted, and duplicate jumps from
// the built-in chain are reduced to one at the head of the chain. On error
// the hooks installed so far stay; the caller removes them.
func Install(ipt IPTables, cfg HookConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	specs := cfg.ChainSpecs()
	for _, h := range cfg.Hooks {
		table, chain := HookTable(h), HookChain(h)
		exists, err := ipt.ChainExists(table, chain)
		if err != nil {
			return fmt.Errorf("hook %s: %w", h, err)
		}
		var old []string
		if exists {
			if old, err = chainRules(ipt, table, chain); err != nil {
				return fmt.Errorf("hook %s: %w", h, err)
			}
		} else if err := ipt.NewChain(table, chain); err != nil {
			return fmt.Errorf("hook %s: create chain %s in %s: %w", h, chain, table, err)
		}
		for _, spec := range specs {
			if err := ipt.Append(table, chain, spec...); err != nil {
				return fmt.Errorf("hook %s: add rule %q to %s: %w", h, strings.Join(spec, " "), chain, err)
			}
		}
		for range old {
			if err := ipt.DeleteById(table, chain, 1); err != nil {
				return fmt.Errorf("hook %s: delete stale rule from %s: %w", h, chain, err)
			}
		}
		if err := installJump(ipt, h); err != nil {
			return err
		}
	}
	return nil
}

// installJump makes the jump to h's chain the first rule of the built-in
// chain, exactly once.
func installJump(ipt IPTables, h matchers.Hook) error {
	table, builtin := HookTable(h), h.String()
	n, first, err := countJumps(ipt, h)
	if err != nil {
		return err
	}
	if n == 1 && first {
		return nil
	}
	if err := ipt.Insert(table, builtin, 1, jumpSpec(h)...); err != nil {
		return fmt.Errorf("hook %s: insert jump into %s %s: %w", h, table, builtin, err)
	}
	// Delete the older jumps; Delete removes the first match, which is the
	// one just inserted, so delete by position instead.
	for n > 0 {
		rules, err := chainRules(ipt, table, builtin)
		if err != nil {
			return fmt.Errorf("hook %s: %w", h, err)
		}
		want := ruleLine(builtin, jumpSpec(h))
		deleted := false
		for i := len(rules) - 1; i >= 1; i-- {
			if rules[i] == want {
				if err := ipt.DeleteById(table, builtin, i+1); err != nil {
					return fmt.Errorf("hook %s: delete stale jump from %s: %w", h, builtin, err)
				}
				deleted = true
				break
			}
		}
		if !deleted {
			break
		}
		n--
	}
	return nil
}

// countJumps counts the jumps from h's built-in chain to h's hook chain and
// reports whether the first rule is one.
func countJumps(ipt IPTables, h matchers.Hook) (n int, first bool, err error) {
	table, builtin := HookTable(h), h.String()
	rules, err := chainRules(ipt, table, builtin)
	if err != nil {
		return 0, false, fmt.Errorf("hook %s: %w", h, err)
	}
	want := ruleLine(builtin, jumpSpec(h))
	for i, r := range rules {
		if r == want {
			n++
			if i == 0 {
				first = true
			}
		}
	}
	return n, first, nil
}

// chainRules lists a chain's rules as iptables -S prints them, without the
// -N or -P line.
func chainRules(ipt IPTables, table, chain string) ([]string, error) {
	lines, err := ipt.List(table, chain)
	if err != nil {
		return nil, fmt.Errorf("list %s %s: %w", table, chain, err)
	}
	rules := lines[:0:0]
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, l)
		}
	}
	return rules, nil
}

// Remove deletes the hook chains of hooks and every jump to them. With no
// hooks it removes every qtables chain found (filter and mangle), whatever
// run installed it. Missing chains are not an error. It tries every hook and
// returns the errors joined.
func Remove(ipt IPTables, hooks []matchers.Hook) error {
	if len(hooks) == 0 {
		found, err := Find(ipt)
		if err != nil {
			return err
		}
		hooks = found
	}
	var errs []error
	for _, h := range hooks {
		if err := removeHook(ipt, h); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeHook(ipt IPTables, h matchers.Hook) error {
	table, chain, builtin := HookTable(h), HookChain(h), h.String()
	// The jumps go first, so the chain is unreferenced when it is deleted.
	for {
		n, _, err := countJumps(ipt, h)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if err := ipt.Delete(table, builtin, jumpSpec(h)...); err != nil {
			return fmt.Errorf("hook %s: delete jump from %s %s: %w", h, table, builtin, err)
		}
	}
	exists, err := ipt.ChainExists(table, chain)
	if err != nil {
		return fmt.Errorf("hook %s: %w", h, err)
	}
	if !exists {
		return nil
	}
	if err := ipt.ClearAndDeleteChain(table, chain); err != nil {
		return fmt.Errorf("hook %s: delete chain %s from %s: %w", h, chain, table, err)
	}
	return nil
}

// Find returns the hooks that have a qtables chain in the kernel, in hook
// order. A QTABLES- chain in a table that cannot hold its hook (say
// QTABLES-INPUT in mangle, made by hand) is not qtables' and is ignored.
func Find(ipt IPTables) ([]matchers.Hook, error) {
	var hooks []matchers.Hook
	for _, table := range []string{"filter", "mangle"} {
		chains, err := ipt.ListChains(table)
		if err != nil {
			return nil, fmt.Errorf("list chains of %s: %w", table, err)
		}
		for _, c := range chains {
			name, ok := strings.CutPrefix(c, ChainPrefix)
			if !ok {
				continue
			}
			h, ok := matchers.HookByName(name)
			if ok && HookTable(h) == table {
				hooks = append(hooks, h)
			}
		}
	}
	sort.Slice(hooks, func(i, j int) bool { return hooks[i] < hooks[j] })
	return hooks, nil
}

// HookState describes one installed hook, for `qtables hooks status`.
type HookState struct {
	Hook  matchers.Hook
	Table string
	Chain string
	// Jumps counts the jumps from the built-in chain (1 when healthy);
	// First reports that one of them is the built-in chain's first rule.
	Jumps int
	First bool
	// Rules are the hook chain's rules as iptables -S prints them.
	Rules []string
	// Packets and Bytes are the kernel's counters of the chain's rules,
	// summed: the packets sent to the queue (or bypassed).
	Packets, Bytes uint64
}

// Status reports every hook found in the kernel.
func Status(ipt IPTables) ([]HookState, error) {
	hooks, err := Find(ipt)
	if err != nil {
		return nil, err
	}
	var out []HookState
	for _, h := range hooks {
		st := HookState{Hook: h, Table: HookTable(h), Chain: HookChain(h)}
		if st.Jumps, st.First, err = countJumps(ipt, h); err != nil {
			return nil, err
		}
		if st.Rules, err = chainRules(ipt, st.Table, st.Chain); err != nil {
			return nil, err
		}
		lines, err := ipt.ListWithCounters(st.Table, st.Chain)
		if err != nil {
			return nil, fmt.Errorf("hook %s: %w", h, err)
		}
		for _, l := range lines {
			p, b, ok := ruleCounters(l)
			if ok {
				st.Packets += p
				st.Bytes += b
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// ruleCounters reads "-c P B" from an iptables -S -v line
// ("-A CHAIN ... -c 12 3456").
func ruleCounters(line string) (packets, bytes uint64, ok bool) {
	if !strings.HasPrefix(line, "-A ") {
		return 0, 0, false
	}
	f := strings.Fields(line)
	for i := 0; i+2 < len(f); i++ {
		if f[i] == "-c" {
			p, err1 := strconv.ParseUint(f[i+1], 10, 64)
			b, err2 := strconv.ParseUint(f[i+2], 10, 64)
			if err1 == nil && err2 == nil {
				return p, b, true
			}
		}
	}
	return 0, 0, false
}
