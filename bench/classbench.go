package bench

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// ParseClassBench reads a filter set in ClassBench's format, one filter a
// line:
//
//	@src/len <TAB> dst/len <TAB> lo : hi <TAB> lo : hi <TAB> proto/mask <TAB> flags/mask
//
// (source prefix, destination prefix, source and destination port ranges,
// protocol with mask 0xFF for one protocol or 0x00 for any). The flags
// field, which some generators add, is read and ignored: it has no iptables
// counterpart that the sets' users agree on, and classifiers evaluated on
// ClassBench (and its trace generator) match on the five-tuple only.
//
// Every filter is returned with Accept set; see SetActions.
func ParseClassBench(name string, r io.Reader) ([]Filter, error) {
	var fs []Filter
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		f, err := parseClassBenchLine(text)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		f.Orig = len(fs)
		fs = append(fs, f)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return fs, nil
}

// LoadClassBench reads the ClassBench filter file at path.
func LoadClassBench(path string) ([]Filter, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseClassBench(path, f)
}

func parseClassBenchLine(s string) (Filter, error) {
	if s[0] != '@' {
		return Filter{}, fmt.Errorf("filter line must start with '@': %q", s)
	}
	tok := strings.Fields(s[1:])
	// src dst lo : hi lo : hi proto/mask [flags/mask]
	if len(tok) < 9 || tok[3] != ":" || tok[6] != ":" {
		return Filter{}, fmt.Errorf("want \"@src/len dst/len lo : hi lo : hi proto/mask [flags/mask]\", got %q", s)
	}
	f := Filter{Accept: true}
	var err error
	if f.Src, err = parsePrefix(tok[0]); err != nil {
		return f, fmt.Errorf("source: %w", err)
	}
	if f.Dst, err = parsePrefix(tok[1]); err != nil {
		return f, fmt.Errorf("destination: %w", err)
	}
	if f.SPort, err = parseRange(tok[2], tok[4]); err != nil {
		return f, fmt.Errorf("source ports: %w", err)
	}
	if f.DPort, err = parseRange(tok[5], tok[7]); err != nil {
		return f, fmt.Errorf("destination ports: %w", err)
	}
	p, m, ok := strings.Cut(tok[8], "/")
	if !ok {
		return f, fmt.Errorf("protocol %q: want value/mask", tok[8])
	}
	pv, err1 := strconv.ParseUint(p, 0, 8)
	mv, err2 := strconv.ParseUint(m, 0, 8)
	switch {
	case err1 != nil || err2 != nil:
		return f, fmt.Errorf("protocol %q: want value/mask, each 0..0xFF", tok[8])
	case mv == 0xff:
		f.Proto = uint8(pv)
	case mv == 0:
		f.Proto = 0
	default:
		return f, fmt.Errorf("protocol %q: mask must be 0xFF or 0x00 (iptables matches one protocol or any)", tok[8])
	}
	if f.Proto == 0 && mv == 0xff {
		return f, fmt.Errorf("protocol %q: protocol 0 with mask 0xFF cannot be expressed in iptables (-p 0 means any)", tok[8])
	}
	return f, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if !p.Addr().Is4() {
		return p, fmt.Errorf("%q is not an IPv4 prefix", s)
	}
	// ClassBench writes the address with host bits; iptables masks them.
	return p.Masked(), nil
}

func parseRange(lo, hi string) (PortRange, error) {
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || l > h {
		return PortRange{}, fmt.Errorf("%s : %s is not a port range", lo, hi)
	}
	return PortRange{uint16(l), uint16(h)}, nil
}

// SetActions gives fs their actions: "accept" makes every filter ACCEPT
// (use with a DROP policy: a whitelist, the usual reading of an ACL set);
// "alternate" makes source filters 0, 2, 4... ACCEPT and 1, 3, 5... DROP,
// so that the verdict alone tells neighbouring filters apart.
func SetActions(fs []Filter, mode string) error {
	for i := range fs {
		switch mode {
		case "", "accept":
			fs[i].Accept = true
		case "alternate":
			fs[i].Accept = fs[i].Orig%2 == 0
		default:
			return fmt.Errorf("actions %q: accept or alternate expected", mode)
		}
	}
	return nil
}
