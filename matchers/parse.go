package matchers

// Option parsing and printing shared by the extensions. Every number,
// range, mark, port and service name an extension reads goes through
// here, so that all of them accept exactly what iptables 1.8.9 accepts:
// iptables reads numbers with C's strtoul, not with Go's rules, and looks
// service names up in /etc/services with the C library's semantics.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

// ErrInvert is returned by a builder for "!" before an option that does not
// take one; the engine normally catches this first.
var ErrInvert = errors.New("cannot be inverted")

// ---- numbers ----

// strtoul reads an unsigned number at the start of s as C's strtoul does
// inside iptables' xtables_strtoul_base: leading white space and one '+'
// are skipped, a '-' is refused (strtoul would negate), and with base 0 a
// "0x"/"0X" followed by a hex digit selects hex and a leading 0 octal.
// Nothing else is special: no "0b", "0o" or '_' as Go's base 0 has. It
// returns the value and the unread rest of s; ok is false when no digit was
// read or the value overflows 64 bits (ERANGE). Go's strconv is not used
// because it differs on every one of these points.
func strtoul(s string, base int) (v uint64, rest string, ok bool) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	if i < len(s) && s[i] == '-' {
		return 0, s, false
	}
	if i < len(s) && s[i] == '+' {
		i++
	}
	if base == 0 {
		switch {
		case i+2 < len(s) && s[i] == '0' && (s[i+1] == 'x' || s[i+1] == 'X') && digitVal(s[i+2]) < 16:
			base, i = 16, i+2
		case i < len(s) && s[i] == '0':
			base = 8
		default:
			base = 10
		}
	}
	start := i
	for i < len(s) {
		d := digitVal(s[i])
		if d >= base {
			break
		}
		if v > (1<<64-1-uint64(d))/uint64(base) {
			return 0, s, false // ERANGE
		}
		v = v*uint64(base) + uint64(d)
		i++
	}
	if i == start {
		return 0, s, false
	}
	return v, s[i:], true
}

// isCSpace is C's isspace in the C locale.
func isCSpace(c byte) bool { return c == ' ' || c >= '\t' && c <= '\r' }

// digitVal is the value of c as a digit in bases up to 36, 99 for none.
func digitVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	}
	return 99
}

// ParseUint parses all of s as iptables' xtables_strtoul(s, NULL, ..., 0,
// max) does: strtoul with base 0 (see strtoul), nothing may follow the
// digits, and the value must be at most max.
func ParseUint(s string, max uint64) (uint64, error) {
	v, rest, ok := strtoul(s, 0)
	if !ok || rest != "" || v > max {
		return 0, fmt.Errorf("bad value %q, or out of range (0-%d)", s, max)
	}
	return v, nil
}

// parseRange parses the argument of a range option as iptables' guided
// option parser does for its range types (UINT16RC, PORTRC): at most two
// parts separated by ':', each read by part; an empty part takes the
// default, 0 for the first and max for the second. n is the number of
// parts given (1 or 2); with n == 1 only v[0] was given. A reversed range
// is not an error here: each option decides.
func parseRange(s string, max uint64, part func(string) (uint64, error)) (v [2]uint64, n int, err error) {
	parts := strings.Split(s, ":")
	if len(parts) > 2 {
		return v, 0, fmt.Errorf("too many components in %q (max: 2)", s)
	}
	v[1] = max
	for i, p := range parts {
		if p == "" {
			continue
		}
		if v[i], err = part(p); err != nil {
			return v, 0, err
		}
	}
	return v, len(parts), nil
}

// parseUintRange is parseRange with strtoul numbers of at most max.
func parseUintRange(s string, max uint64) (v [2]uint64, n int, err error) {
	return parseRange(s, max, func(p string) (uint64, error) { return ParseUint(p, max) })
}

// ParseMark parses VALUE[/MASK] as iptables' xtables_parse_val_mask does
// (the MARKMASK32 option type): strtoul numbers of 32 bits for both parts,
// the mask 0xffffffff when none is given, and nothing may follow.
func ParseMark(s string) (value, mask uint32, err error) {
	v, rest, ok := strtoul(s, 0)
	if !ok || v > 0xffffffff {
		return 0, 0, fmt.Errorf("bad mark value %q", s)
	}
	m := uint64(0xffffffff)
	if rest != "" && rest[0] == '/' {
		m, rest, ok = strtoul(rest[1:], 0)
		if !ok || m > 0xffffffff {
			return 0, 0, fmt.Errorf("bad mark mask %q", s)
		}
	}
	if rest != "" {
		return 0, 0, fmt.Errorf("trailing garbage after mark %q", s)
	}
	return uint32(v), uint32(m), nil
}

// ---- ports ----

// PortRange is an inclusive range of ports. A reversed range (Min > Max)
// contains no port.
type PortRange struct{ Min, Max uint16 }

// anyPort is the unconstrained range, the default of every port option.
var anyPort = PortRange{0, 0xffff}

// Full reports whether r is 0:65535 (no constraint).
func (r PortRange) Full() bool { return r == anyPort }

// Contains reports whether p is in r.
func (r PortRange) Contains(p uint16) bool { return p >= r.Min && p <= r.Max }

// ParsePort parses one port as xtables_parse_port(s, proto) does: a
// ParseUint number up to 65535 ("0x50" is 80), else a service name or
// alias of proto ("tcp", "udp", ...) in /etc/services. With proto "" a name
// of any protocol is accepted, as getaddrinfo finds it (see lookupService).
func ParsePort(s, proto string) (uint16, error) {
	if v, err := ParseUint(s, 0xffff); err == nil {
		return uint16(v), nil
	}
	if p, ok := lookupService(s, proto); ok {
		return p, nil
	}
	return 0, fmt.Errorf("invalid port/service %q specified", s)
}

// ParsePortRange parses p, a:b, :b, a: or : as libxt_tcp does, each port
// by ParsePort; a missing end is 0 or 65535, and a > b is an error.
func ParsePortRange(s, proto string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, ":")
	if !isRange {
		p, err := ParsePort(s, proto)
		return PortRange{p, p}, err
	}
	r := anyPort
	var err error
	if lo != "" {
		if r.Min, err = ParsePort(lo, proto); err != nil {
			return r, err
		}
	}
	if hi != "" {
		if r.Max, err = ParsePort(hi, proto); err != nil {
			return r, err
		}
	}
	if r.Min > r.Max {
		return r, fmt.Errorf("invalid portrange (min > max) %q", s)
	}
	return r, nil
}

// parsePortRC parses a port range as iptables 1.8.9's guided parser does
// for its PORTRC type (the udp match): parseRange, so min > max is
// accepted, with each part resolved by getaddrinfo (parseGAIPort).
func parsePortRC(s string) (PortRange, error) {
	v, n, err := parseRange(s, 0xffff, parseGAIPort)
	if err != nil {
		return PortRange{}, err
	}
	if n == 1 {
		v[1] = v[0]
	}
	return PortRange{uint16(v[0]), uint16(v[1])}, nil
}

// parseGAIPort resolves a port as getaddrinfo(NULL, s, NULL) does: a whole
// decimal strtoul number (so "0x50" is a name, and fails), else a service
// name of any protocol (lookupService with proto ""). getaddrinfo wraps
// numbers above 65535 (65536 is port 0); they are refused here instead.
func parseGAIPort(s string) (uint64, error) {
	if v, rest, ok := strtoul(s, 10); ok && rest == "" {
		if v > 0xffff {
			return 0, fmt.Errorf("invalid port %q (must be 0..65535)", s)
		}
		return v, nil
	}
	if p, ok := lookupService(s, ""); ok {
		return uint64(p), nil
	}
	return 0, fmt.Errorf("port %q does not resolve to anything", s)
}

// ---- service names ----

// services is /etc/services as the C library's getservbyname and
// getservbyport see it, read once on first use.
var services struct {
	once sync.Once
	db   *serviceDB
}

// serviceDB holds the entries of a services file. In both maps the first
// entry in file order wins, as in getservbyname and getservbyport, which
// scan the file from the top.
type serviceDB struct {
	byName map[serviceName]uint16 // names and aliases
	byPort map[servicePort]string // the official name only
}

type serviceName struct{ name, proto string }

type servicePort struct {
	port  uint16
	proto string
}

// readServices parses a services file: "name port/proto [alias...]", with
// '#' starting a comment; malformed lines are skipped.
func readServices(r io.Reader) *serviceDB {
	db := &serviceDB{byName: map[serviceName]uint16{}, byPort: map[servicePort]string{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		portS, proto, ok := strings.Cut(fields[1], "/")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(portS, 10, 16)
		if err != nil {
			continue
		}
		port := uint16(p)
		if _, dup := db.byPort[servicePort{port, proto}]; !dup {
			db.byPort[servicePort{port, proto}] = fields[0]
		}
		for _, n := range append(fields[:1:1], fields[2:]...) {
			if _, dup := db.byName[serviceName{n, proto}]; !dup {
				db.byName[serviceName{n, proto}] = port
			}
		}
	}
	return db
}

func systemServices() *serviceDB {
	services.once.Do(func() {
		f, err := os.Open("/etc/services")
		if err != nil {
			services.db = readServices(strings.NewReader(""))
			return
		}
		defer f.Close()
		services.db = readServices(f)
	})
	return services.db
}

// gaiProtos is the order in which getaddrinfo without hints tries the
// protocols when it resolves a service name; the first hit wins.
var gaiProtos = [...]string{"tcp", "udp", "dccp", "udplite", "sctp"}

// lookup resolves a service name or alias for proto as getservbyname does;
// proto "" tries the protocols in getaddrinfo's order.
func (db *serviceDB) lookup(name, proto string) (uint16, bool) {
	if proto != "" {
		p, ok := db.byName[serviceName{name, proto}]
		return p, ok
	}
	for _, pr := range gaiProtos {
		if p, ok := db.byName[serviceName{name, pr}]; ok {
			return p, true
		}
	}
	return 0, false
}

// lookupService resolves name in /etc/services (see serviceDB.lookup).
func lookupService(name, proto string) (uint16, bool) {
	return systemServices().lookup(name, proto)
}

// ServiceName returns the name `iptables -L` prints for port/proto without
// -n: the official name of the first /etc/services entry for it, as
// getservbyport returns ("smtp" for 25/tcp, not its alias "mail"). ok is
// false when there is none.
func ServiceName(port uint16, proto string) (string, bool) {
	n, ok := systemServices().byPort[servicePort{port, proto}]
	return n, ok
}

// ---- option bookkeeping and names ----

// once records that option name was seen and fails on a repeat. The engine
// normally refuses repeats first; builders check too so that they are
// correct on their own.
func once(seen *map[string]bool, name string) error {
	if *seen == nil {
		*seen = map[string]bool{}
	}
	if (*seen)[name] {
		return fmt.Errorf("only one --%s allowed", name)
	}
	(*seen)[name] = true
	return nil
}

// equalFold reports whether a and b are equal under ASCII case folding, as
// C's strcasecmp compares them in the C locale (iptables never sets a
// locale). strings.EqualFold is not used: it also folds Unicode, so it
// would take "ſyn" for "SYN".
func equalFold(a, b string) bool {
	return len(a) == len(b) && hasPrefixFold(a, b)
}

// hasPrefixFold reports whether s starts with prefix under ASCII case
// folding: strncasecmp(s, prefix, strlen(prefix)) == 0. The empty prefix
// is a prefix of everything.
func hasPrefixFold(s, prefix string) bool {
	if len(prefix) > len(s) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if lowerASCII(s[i]) != lowerASCII(prefix[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// ---- printing ----

// writeInv appends " !" for an inverted option.
func writeInv(b *strings.Builder, inv bool) {
	if inv {
		b.WriteString(" !")
	}
}

// SavePortRange appends " N" or " A:B".
func SavePortRange(b *strings.Builder, r PortRange) {
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(int(r.Min)))
	if r.Min != r.Max {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(r.Max)))
	}
}

// savePortOpt appends " [!] --sport N[:M]" unless the range is the
// unconstrained default.
func savePortOpt(b *strings.Builder, opt string, r PortRange, inv bool) {
	if r.Full() && !inv {
		return
	}
	writeInv(b, inv)
	b.WriteByte(' ')
	b.WriteString(opt)
	SavePortRange(b, r)
}

// listPortOpt appends " spt:[!]P" or " spts:[!]A:B" (print_ports of tcp
// and udp), with service names of proto unless numeric.
func listPortOpt(b *strings.Builder, name string, r PortRange, inv, numeric bool, proto string) {
	if r.Full() && !inv {
		return
	}
	b.WriteByte(' ')
	b.WriteString(name)
	if r.Min != r.Max {
		b.WriteByte('s')
	}
	b.WriteByte(':')
	if inv {
		b.WriteByte('!')
	}
	writePortName(b, r.Min, numeric, proto)
	if r.Min != r.Max {
		b.WriteByte(':')
		writePortName(b, r.Max, numeric, proto)
	}
}

// writePortName appends port by its service name for proto (ServiceName)
// unless numeric or there is none.
func writePortName(b *strings.Builder, port uint16, numeric bool, proto string) {
	if !numeric && proto != "" {
		if n, ok := ServiceName(port, proto); ok {
			b.WriteString(n)
			return
		}
	}
	b.WriteString(strconv.Itoa(int(port)))
}

// SaveString appends s as xtables_save_string does: bare when it is
// non-empty and only [A-Za-z0-9_-], else double-quoted with ", \ and '
// escaped by a backslash.
func SaveString(b *strings.Builder, s string) {
	bare := s != ""
	for i := 0; i < len(s) && bare; i++ {
		c := s[i]
		bare = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if bare {
		b.WriteString(s)
		return
	}
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"', '\\', '\'':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}

// WriteHex appends "0x" and v in lowercase hex without padding.
func WriteHex(b *strings.Builder, v uint32) {
	b.WriteString("0x")
	b.WriteString(strconv.FormatUint(uint64(v), 16))
}
