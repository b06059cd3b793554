package matchers

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// ParseUint parses s as strtoul(s, 0) does in iptables: decimal, 0x hex or
// leading-0 octal, no sign, at most max.
func ParseUint(s string, max uint64) (uint64, error) {
	bad := s == "" || s[0] == '-' || strings.ContainsRune(s, '_')
	digits, base := strings.TrimPrefix(s, "+"), 10
	switch {
	case len(digits) > 2 && (digits[:2] == "0x" || digits[:2] == "0X"):
		digits, base = digits[2:], 16
	case len(digits) > 1 && digits[0] == '0':
		digits, base = digits[1:], 8
	}
	v, err := strconv.ParseUint(digits, base, 64)
	if bad || err != nil || v > max {
		return 0, fmt.Errorf("invalid number %q (must be 0..%d)", s, max)
	}
	return v, nil
}

// ParseMark parses VALUE[/MASK] with u32 values; the mask defaults to
// 0xffffffff. hasMask reports whether a mask was given.
func ParseMark(s string) (value, mask uint32, hasMask bool, err error) {
	vs, ms, hasMask := strings.Cut(s, "/")
	v, err := ParseUint(vs, 0xffffffff)
	if err != nil {
		return 0, 0, false, fmt.Errorf("bad mark value %q", s)
	}
	mask = 0xffffffff
	if hasMask {
		m, err := ParseUint(ms, 0xffffffff)
		if err != nil {
			return 0, 0, false, fmt.Errorf("bad mark mask %q", s)
		}
		mask = uint32(m)
	}
	return uint32(v), mask, hasMask, nil
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Min, Max uint16 }

// Full reports whether r is 0:65535 (no constraint).
func (r PortRange) Full() bool { return r.Min == 0 && r.Max == 0xffff }

// Contains reports whether p is in r.
func (r PortRange) Contains(p uint16) bool { return p >= r.Min && p <= r.Max }

// ParsePort parses one port: a number 0..65535 or a service name known for
// proto ("tcp", "udp") in /etc/services.
func ParsePort(s, proto string) (uint16, error) {
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil || v > 65535 {
			return 0, fmt.Errorf("invalid port/service %q specified", s)
		}
		return uint16(v), nil
	}
	if p, ok := lookupService(s, proto); ok {
		return p, nil
	}
	return 0, fmt.Errorf("invalid port/service %q specified", s)
}

// ParsePortRange parses p, a:b, :b, a: or : as the tcp and udp matches do.
// a > b is an error.
func ParsePortRange(s, proto string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, ":")
	if !isRange {
		p, err := ParsePort(s, proto)
		return PortRange{p, p}, err
	}
	r := PortRange{0, 0xffff}
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

// SavePortRange appends " N" or " A:B".
func SavePortRange(b *strings.Builder, r PortRange) {
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(int(r.Min)))
	if r.Min != r.Max {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(r.Max)))
	}
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

// ErrInvert is returned by a builder for "!" before an option that does not
// take one; the engine normally catches this first.
var ErrInvert = errors.New("cannot be inverted")

var services struct {
	once   sync.Once
	byName map[string]uint16 // "name/proto" -> port
}

// lookupService resolves a service name as getservbyname does, from
// /etc/services, read once.
func lookupService(name, proto string) (uint16, bool) {
	services.once.Do(func() {
		services.byName = map[string]uint16{}
		f, err := os.Open("/etc/services")
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			portS, pr, ok := strings.Cut(fields[1], "/")
			if !ok {
				continue
			}
			p, err := strconv.ParseUint(portS, 10, 16)
			if err != nil {
				continue
			}
			for _, n := range append([]string{fields[0]}, fields[2:]...) {
				if _, seen := services.byName[n+"/"+pr]; !seen {
					services.byName[n+"/"+pr] = uint16(p)
				}
			}
		}
	})
	p, ok := services.byName[name+"/"+proto]
	return p, ok
}

// ServiceName returns the /etc/services name for port/proto, for -L output
// without -n; ok is false when there is none.
func ServiceName(port uint16, proto string) (string, bool) {
	lookupService("", proto) // load
	best := ""
	for k, p := range services.byName {
		n, pr, _ := strings.Cut(k, "/")
		if p == port && pr == proto && (best == "" || n < best) {
			best = n
		}
	}
	return best, best != ""
}
