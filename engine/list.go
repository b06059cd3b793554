package engine

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

// listFormat says how `iptables -L` lays out a rule: it mirrors the
// FMT_* flags of iptables' printer, whose combinations decide the columns.
type listFormat struct {
	numeric     bool // -n: addresses, protocols and ports as numbers
	counters    bool // -v: pkts and bytes columns, policy counters
	via         bool // -v: in and out columns
	exact       bool // -x: counters not abbreviated to K, M, G, T
	lineNumbers bool // --line-numbers
	// notable prints one rule on one line without column padding, as
	// iptables -v does when it echoes the rules it adds or deletes.
	notable bool
	// names resolves addresses and protocols without -n.
	names *nameDB
}

func listFormatOf(cmd *Command, names *nameDB) listFormat {
	return listFormat{
		numeric:     cmd.Numeric,
		counters:    cmd.Verbose,
		via:         cmd.Verbose,
		exact:       cmd.Exact,
		lineNumbers: cmd.LineNumbers,
		names:       names,
	}
}

// echoFormat is the format of the rule echo of a verbose -A/-I/-D/-R/-C
// (iptables' FMT_PRINT_RULE).
var echoFormat = listFormat{numeric: true, via: true, notable: true, names: &nameDB{}}

// pad writes s left-aligned in a column of width w (printf "%-*s"), or
// bare in the untabulated format.
func (f listFormat) pad(b *strings.Builder, s string, w int) {
	b.WriteString(s)
	if !f.notable {
		for i := len(s); i < w; i++ {
			b.WriteByte(' ')
		}
	}
}

func padLeft(b *strings.Builder, s string, w int) {
	for i := len(s); i < w; i++ {
		b.WriteByte(' ')
	}
	b.WriteString(s)
}

// writeCount prints a counter followed by a space as xtables_print_num
// does: exact in an 8-wide column with -x, else up to 99999 in a 5-wide
// column and above that rounded to K, M, G or T ("%4lluK"). The rounding
// adds 500 in uint64 arithmetic, so values within 500 of 2^64 wrap to "0K"
// exactly as in iptables.
func (f listFormat) writeCount(b *strings.Builder, n uint64) {
	s, w := "", 5
	switch {
	case f.exact:
		s, w = strconv.FormatUint(n, 10), 8
	case n <= 99999:
		s = strconv.FormatUint(n, 10)
	default:
		for _, unit := range "KMGT" {
			n = (n + 500) / 1000
			if n <= 9999 || unit == 'T' {
				s = strconv.FormatUint(n, 10) + string(unit)
				break
			}
		}
	}
	if f.notable {
		b.WriteString(s)
	} else {
		padLeft(b, s, w)
	}
	b.WriteByte(' ')
}

// writeHeader prints the "Chain ..." line and the column titles.
func (f listFormat) writeHeader(b *strings.Builder, t *Table, c *Chain) {
	b.WriteString("Chain " + c.Name)
	if c.Builtin {
		b.WriteString(" (policy " + policyName(c.Policy))
		if f.counters {
			p, by := c.Counters.Get()
			pf := f
			pf.notable = true
			b.WriteByte(' ')
			pf.writeCount(b, p)
			b.WriteString("packets, ")
			pf.writeCount(b, by)
			b.WriteString("bytes")
		}
		b.WriteString(")\n")
	} else {
		fmt.Fprintf(b, " (%d references)\n", t.References(c.Name))
	}
	if f.lineNumbers {
		f.pad(b, "num", 4)
		b.WriteByte(' ')
	}
	if f.counters {
		// The titles are 5 and 5 wide when abbreviating, 8 and 10 when
		// exact, although exact byte counts print 8 wide: iptables'
		// columns do not line up with -x either.
		if f.exact {
			padLeft(b, "pkts", 8)
			b.WriteString(" ")
			padLeft(b, "bytes", 10)
			b.WriteString(" ")
		} else {
			b.WriteString(" pkts bytes ")
		}
	}
	f.pad(b, "target", 9)
	b.WriteString("  prot opt")
	if f.via {
		b.WriteString(" in     out    ")
	}
	b.WriteByte(' ')
	f.pad(b, "source", 19)
	b.WriteString("  ")
	f.pad(b, "destination", 19)
	b.WriteString(" \n")
}

// writeRule prints one rule line; num is its position in the chain.
func (f listFormat) writeRule(b *strings.Builder, num int, r *Rule) {
	if f.lineNumbers {
		f.pad(b, strconv.Itoa(num), 4)
		b.WriteByte(' ')
	}
	if f.counters {
		p, by := r.Counters.Get()
		f.writeCount(b, p)
		f.writeCount(b, by)
	}
	name := ""
	if r.Target.Kind != TargetNone {
		name = r.Target.Name
	}
	f.pad(b, name, 9)
	b.WriteByte(' ')
	if r.InvProto {
		b.WriteByte('!')
	} else {
		b.WriteByte(' ')
	}
	// In the table, -n prints the protocol number even for tcp; the
	// one-line echo keeps the built-in names.
	if pname, ok := f.names.protoName(r.Proto, f.numeric); ok && !(f.numeric && !f.notable) {
		f.pad(b, pname, 4)
	} else {
		f.pad(b, strconv.Itoa(int(r.Proto)), 4)
	}
	b.WriteByte(' ')
	if f.notable {
		b.WriteString("opt ")
	}
	switch r.Frag {
	case FragNonFirst:
		b.WriteString("-f")
	case FragNotFrag:
		b.WriteString("!f")
	default:
		b.WriteString("--")
	}
	b.WriteByte(' ')
	if f.via {
		if f.notable {
			b.WriteString("in " + listIface(r.In, f.numeric) + " out " + listIface(r.Out, f.numeric) + " ")
		} else {
			b.WriteByte(' ')
			f.pad(b, listIface(r.In, f.numeric), 6)
			b.WriteByte(' ')
			f.pad(b, listIface(r.Out, f.numeric), 6)
			b.WriteByte(' ')
		}
	}
	for i, a := range [2]Addr{r.Src, r.Dst} {
		if a.Inv {
			b.WriteByte('!')
		} else {
			b.WriteByte(' ')
		}
		if f.notable && i == 1 {
			b.WriteString("-> ")
		}
		f.pad(b, f.names.addr(a, f.numeric), 19)
		if !(f.notable && i == 1) {
			b.WriteByte(' ')
		}
	}
	if f.notable {
		b.WriteString("  ")
	}
	if r.Target.Kind == TargetGoto {
		b.WriteString("[goto] ")
	}
	for _, m := range r.Matches {
		m.Match.List(b, f.numeric)
	}
	if r.Target.Ext != nil {
		r.Target.Ext.List(b, f.numeric)
	}
	b.WriteByte('\n')
}

func listIface(i Iface, numeric bool) string {
	if i.Name == "" && !i.Inv { // no -i, or -i + (any name, none included)
		if numeric {
			return "*"
		}
		return "any"
	}
	s := i.Name
	if i.Wild {
		s += "+"
	}
	if i.Inv {
		s = "!" + s
	}
	return s
}

// addr prints an address as iptables -L does: "anywhere" for /0 unless
// numeric; otherwise the address (or, without -n, its name) followed by
// "/len", "/dotted-mask" for a non-contiguous mask, or nothing for /32.
func (db *nameDB) addr(a Addr, numeric bool) string {
	if a.Mask == 0 && !numeric {
		return "anywhere"
	}
	s := ""
	if !numeric {
		s = db.hostName(a.Addr)
	}
	if s == "" {
		s = formatIPv4(a.Addr)
	}
	if n, ok := prefixLen(a.Mask); !ok {
		s += "/" + formatIPv4(a.Mask)
	} else if n != 32 {
		s += "/" + strconv.Itoa(n)
	}
	return s
}

// protoName returns the name iptables -L prints for protocol p: the
// names iptables has built in (xtables_chain_protos, with "all" for 0),
// then, unless numeric, /etc/protocols. ok is false for a bare number.
func (db *nameDB) protoName(p uint8, numeric bool) (name string, ok bool) {
	if p == 0 {
		return "all", true
	}
	if n, ok := protoNames[p]; ok {
		return n, true
	}
	if !numeric {
		n := db.protocols[p]
		return n, n != ""
	}
	return "", false
}

// nameDB holds what iptables' resolver calls find in the local files:
// gethostbyaddr (/etc/hosts), getnetbyaddr (/etc/networks) and
// getprotobynumber (/etc/protocols). qtables never asks DNS, so on a host
// whose resolver knows more names, iptables -L (without -n) may print a
// name where qtables prints the number.
type nameDB struct {
	hosts     map[uint32]string
	networks  map[uint32]string
	protocols map[uint8]string
}

// newNameDB reads the three files' formats; a nil reader is an empty file.
func newNameDB(hosts, networks, protocols io.Reader) *nameDB {
	db := &nameDB{hosts: map[uint32]string{}, networks: map[uint32]string{}, protocols: map[uint8]string{}}
	readFields(hosts, func(f []string) {
		if len(f) < 2 {
			return
		}
		if a, err := parseIPv4Strict(f[0]); err == nil {
			if _, dup := db.hosts[a]; !dup {
				db.hosts[a] = f[1]
			}
		}
	})
	readFields(networks, func(f []string) {
		if len(f) < 2 {
			return
		}
		if n, ok := parseNetNumber(f[1]); ok {
			if _, dup := db.networks[n]; !dup {
				db.networks[n] = f[0]
			}
		}
	})
	readFields(protocols, func(f []string) {
		if len(f) < 2 {
			return
		}
		if v, err := strconv.ParseUint(f[1], 10, 8); err == nil {
			if _, dup := db.protocols[uint8(v)]; !dup {
				db.protocols[uint8(v)] = f[0]
			}
		}
	})
	return db
}

// systemNames is the name database of this host, read once.
var systemNames = sync.OnceValue(func() *nameDB {
	var rs [3]io.Reader
	for i, path := range []string{"/etc/hosts", "/etc/networks", "/etc/protocols"} {
		if b, err := os.ReadFile(path); err == nil {
			rs[i] = bytes.NewReader(b)
		}
	}
	return newNameDB(rs[0], rs[1], rs[2])
})

// hostName returns the name iptables prints for address a without -n,
// or "" when it prints the number: the first /etc/hosts entry for a, else
// the /etc/networks name whose network number equals a.
func (db *nameDB) hostName(a uint32) string {
	if n, ok := db.hosts[a]; ok {
		return n
	}
	return db.networks[a]
}

// readFields calls fn with the fields of every non-empty line of r,
// comments removed.
func readFields(r io.Reader, fn func([]string)) {
	if r == nil {
		return
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if fields := strings.Fields(line); len(fields) > 0 {
			fn(fields)
		}
	}
}

// parseIPv4Strict parses a dotted quad with exactly four parts.
func parseIPv4Strict(s string) (uint32, error) {
	if strings.Count(s, ".") != 3 {
		return 0, fmt.Errorf("not a dotted quad: %q", s)
	}
	return parseIPv4(s)
}

// parseNetNumber parses an /etc/networks number as glibc does: missing
// trailing parts are zero ("127" is 127.0.0.0).
func parseNetNumber(s string) (uint32, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return 0, false
	}
	var v uint32
	for i := 0; i < 4; i++ {
		var p uint64
		if i < len(parts) {
			var err error
			if p, err = strconv.ParseUint(parts[i], 10, 8); err != nil {
				return 0, false
			}
		}
		v = v<<8 | uint32(p)
	}
	return v, true
}

// listTable returns the table a listing command shows: the rules file's,
// or, when the file has none, the empty table iptables would show.
func (rs *Ruleset) listTable(cmd *Command) (*Table, error) {
	if t := rs.Table(cmd.Table); t != nil {
		return t, nil
	}
	t, err := NewTable(cmd.Table)
	if err != nil {
		return nil, errAt(cmd.cmdTok, "%v", err)
	}
	return t, nil
}

// listChains returns the chains a listing command covers.
func listChains(t *Table, cmd *Command) ([]*Chain, error) {
	if cmd.Chain == "" {
		return t.Chains, nil
	}
	c, err := t.chainFor(cmd)
	if err != nil {
		return nil, err
	}
	return []*Chain{c}, nil
}

// List prints the rules as `iptables -L` does for cmd's options (-n, -v,
// -x, --line-numbers, a chain, a rule number). A rule number past the end
// of the chain prints nothing, as in iptables.
func (rs *Ruleset) List(w io.Writer, cmd *Command) error {
	return rs.list(w, cmd, systemNames())
}

func (rs *Ruleset) list(w io.Writer, cmd *Command, names *nameDB) error {
	t, err := rs.listTable(cmd)
	if err != nil {
		return err
	}
	chains, err := listChains(t, cmd)
	if err != nil {
		return err
	}
	f := listFormatOf(cmd, names)
	var b strings.Builder
	for i, c := range chains {
		if cmd.RuleNum > 0 {
			if cmd.RuleNum <= len(c.Rules) {
				f.writeRule(&b, cmd.RuleNum, c.Rules[cmd.RuleNum-1])
			}
			continue
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		f.writeHeader(&b, t, c)
		for j, r := range c.Rules {
			f.writeRule(&b, j+1, r)
		}
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// ListRules prints the rules as `iptables -S` does: the policies (-P) and
// user chains (-N) of the chains covered, then their rules (-A); with -v,
// counters as "-c PACKETS BYTES" after the policy and before the rule's
// target.
func (rs *Ruleset) ListRules(w io.Writer, cmd *Command) error {
	t, err := rs.listTable(cmd)
	if err != nil {
		return err
	}
	chains, err := listChains(t, cmd)
	if err != nil {
		return err
	}
	var b strings.Builder
	if cmd.RuleNum > 0 {
		c := chains[0]
		if cmd.RuleNum <= len(c.Rules) {
			writeRuleSpec(&b, c, c.Rules[cmd.RuleNum-1], cmd.Verbose)
		}
		_, err = io.WriteString(w, b.String())
		return err
	}
	for _, c := range chains {
		if !c.Builtin {
			b.WriteString("-N " + c.Name + "\n")
			continue
		}
		b.WriteString("-P " + c.Name + " " + policyName(c.Policy))
		if cmd.Verbose {
			p, by := c.Counters.Get()
			writeCounterOpt(&b, p, by)
		}
		b.WriteByte('\n')
	}
	for _, c := range chains {
		for _, r := range c.Rules {
			writeRuleSpec(&b, c, r, cmd.Verbose)
		}
	}
	_, err = io.WriteString(w, b.String())
	return err
}

func writeCounterOpt(b *strings.Builder, p, by uint64) {
	b.WriteString(" -c " + strconv.FormatUint(p, 10) + " " + strconv.FormatUint(by, 10))
}

// writeRuleSpec prints "-A CHAIN spec" as iptables -S does; with counters
// the "-c P B" goes between the matches and the target.
func writeRuleSpec(b *strings.Builder, c *Chain, r *Rule, counters bool) {
	b.WriteString("-A " + c.Name)
	if !counters {
		r.SaveSpec(b)
		b.WriteByte('\n')
		return
	}
	var spec strings.Builder
	r.SaveSpec(&spec)
	s := spec.String()
	// The target is always the end of the save form: split it off there.
	var tgt strings.Builder
	switch r.Target.Kind {
	case TargetNone:
	case TargetGoto:
		tgt.WriteString(" -g " + r.Target.Name)
	default:
		tgt.WriteString(" -j " + r.Target.Name)
		if r.Target.Ext != nil {
			r.Target.Ext.Save(&tgt)
		}
	}
	ts := tgt.String()
	body, ok := strings.CutSuffix(s, ts)
	if !ok { // cannot happen while SaveSpec ends with the target
		body, ts = s, ""
	}
	p, by := r.Counters.Get()
	b.WriteString(body)
	writeCounterOpt(b, p, by)
	b.WriteString(ts)
	b.WriteByte('\n')
}

// writeEcho prints rules the way iptables -v echoes the rules of an -A,
// -I, -D, -R or -C command.
func writeEcho(b *strings.Builder, rules []*Rule) {
	for _, r := range rules {
		echoFormat.writeRule(b, 0, r)
	}
}
