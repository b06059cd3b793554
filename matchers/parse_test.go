package matchers

import (
	"strings"
	"testing"
)

// The expectations below are C's: strtoul(3) with the given base, as
// iptables' xtables_strtoul_base calls it (a '-' refused first).
func TestStrtoul(t *testing.T) {
	cases := []struct {
		in   string
		base int
		v    uint64
		rest string
		ok   bool
	}{
		{"0", 0, 0, "", true},
		{"80", 0, 80, "", true},
		{"0x50", 0, 80, "", true},
		{"0X1f/3", 0, 31, "/3", true},
		{"010", 0, 8, "", true},
		{"017", 0, 15, "", true},
		{"08", 0, 0, "8", true},   // octal stops at 8
		{"0x", 0, 0, "x", true},   // no hex digit: just the 0
		{"0xg", 0, 0, "xg", true}, // likewise
		{"0b1", 0, 0, "b1", true}, // no binary prefix in C
		{"0o7", 0, 0, "o7", true}, // nor an octal one
		{"1_000", 0, 1, "_000", true},
		{" \t+7:", 0, 7, ":", true},
		{"\n\v\f\r7", 0, 7, "", true},
		{"+0x10", 0, 16, "", true},
		{"1:2", 0, 1, ":2", true},
		{"010", 10, 10, "", true},
		{"0x50", 10, 0, "x50", true},
		{"4294967296", 0, 4294967296, "", true},
		{"18446744073709551615", 0, 1<<64 - 1, "", true},
		{"0xffffffffffffffff", 0, 1<<64 - 1, "", true},
		{"18446744073709551616", 0, 0, "", false}, // ERANGE
		{"99999999999999999999999", 0, 0, "", false},
		{"", 0, 0, "", false},
		{" ", 0, 0, "", false},
		{"-1", 0, 0, "", false},
		{"-0", 0, 0, "", false},
		{" -1", 0, 0, "", false},
		{"+", 0, 0, "", false},
		{"++1", 0, 0, "", false},
		{"+-1", 0, 0, "", false},
		{"x1", 0, 0, "", false},
	}
	for _, tc := range cases {
		v, rest, ok := strtoul(tc.in, tc.base)
		if ok != tc.ok || ok && (v != tc.v || rest != tc.rest) {
			t.Errorf("strtoul(%q, %d) = %d, %q, %v; want %d, %q, %v", tc.in, tc.base, v, rest, ok, tc.v, tc.rest, tc.ok)
		}
	}
}

func TestParseUint(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true}, {"10", 10, true}, {"0x1F", 31, true}, {"0X1f", 31, true},
		{"010", 8, true}, {"+7", 7, true}, {" 7", 7, true}, {"\t+0x7", 7, true},
		{"4294967295", 4294967295, true},
		{"4294967296", 0, false}, {"-1", 0, false}, {"", 0, false}, {" ", 0, false},
		{"7 ", 0, false}, {"0b1", 0, false}, {"0o7", 0, false}, {"1_0", 0, false},
		{"08", 0, false}, {"0x", 0, false}, {"12a", 0, false}, {"1e3", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseUint(tt.in, 0xffffffff)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseUint(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	if _, err := ParseUint("256", 255); err == nil || !strings.Contains(err.Error(), "out of range (0-255)") {
		t.Errorf("ParseUint(256, 255): err = %v", err)
	}
}

// parseUintRange is the guided parser's UINT16RC: ':' splits into at most
// two parts, an empty part is 0 (first) or the maximum (second).
func TestParseUintRange(t *testing.T) {
	tests := []struct {
		in     string
		lo, hi uint64
		n      int
		err    string
	}{
		{"5", 5, 0xffff, 1, ""},
		{"1:2", 1, 2, 2, ""},
		{":2", 0, 2, 2, ""},
		{"1:", 1, 0xffff, 2, ""},
		{":", 0, 0xffff, 2, ""},
		{"", 0, 0xffff, 1, ""},
		{"4:3", 4, 3, 2, ""}, // reversed: the option decides
		{"0x10: 020", 16, 16, 2, ""},
		{"1:2:3", 0, 0, 0, "too many components"},
		{"1::", 0, 0, 0, "too many components"},
		{"1:65536", 0, 0, 0, `bad value "65536"`},
		{"1x:2", 0, 0, 0, `bad value "1x"`},
		{"1: ", 0, 0, 0, `bad value " "`},
		{"-1", 0, 0, 0, `bad value "-1"`},
	}
	for _, tt := range tests {
		v, n, err := parseUintRange(tt.in, 0xffff)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseUintRange(%q): err = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || v != [2]uint64{tt.lo, tt.hi} || n != tt.n {
			t.Errorf("parseUintRange(%q) = %v, %d, %v; want [%d %d], %d", tt.in, v, n, err, tt.lo, tt.hi, tt.n)
		}
	}
}

// ParseMark is xtables_parse_val_mask without a name table.
func TestParseMark(t *testing.T) {
	tests := []struct {
		in          string
		value, mask uint32
		err         string
	}{
		{"1", 1, 0xffffffff, ""},
		{"0x10/0xf0", 0x10, 0xf0, ""},
		{"010/010", 8, 8, ""},
		{" +1/ 2", 1, 2, ""},
		{"0/0", 0, 0, ""},
		{"4294967295/4294967295", 0xffffffff, 0xffffffff, ""},
		{"", 0, 0, "bad mark value"},
		{"/1", 0, 0, "bad mark value"},
		{"-1", 0, 0, "bad mark value"},
		{"4294967296", 0, 0, "bad mark value"},
		{"1/", 0, 0, "bad mark mask"},
		{"1/-1", 0, 0, "bad mark mask"},
		{"1/0x100000000", 0, 0, "bad mark mask"},
		{"1/2/3", 0, 0, "trailing garbage"},
		{"1_0", 0, 0, "trailing garbage"},
		{"0b1", 0, 0, "trailing garbage"},
		{"08", 0, 0, "trailing garbage"},
		{"1 ", 0, 0, "trailing garbage"},
	}
	for _, tt := range tests {
		v, m, err := ParseMark(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseMark(%q): err = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || v != tt.value || m != tt.mask {
			t.Errorf("ParseMark(%q) = %#x/%#x, %v; want %#x/%#x", tt.in, v, m, err, tt.value, tt.mask)
		}
	}
}

// requireServices skips t unless /etc/services has the entries the port
// tests name (Debian's netbase file has them all).
func requireServices(t *testing.T) {
	t.Helper()
	for _, e := range [][2]string{{"ssh", "tcp"}, {"mail", "tcp"}, {"domain", "udp"}, {"http", "tcp"}} {
		if _, ok := lookupService(e[0], e[1]); !ok {
			t.Skipf("/etc/services lacks %s/%s", e[0], e[1])
		}
	}
}

func TestParsePort(t *testing.T) {
	requireServices(t)
	tests := []struct {
		in, proto string
		want      uint16
		ok        bool
	}{
		{"22", "tcp", 22, true},
		{"0x50", "tcp", 80, true}, // base 0, unlike getaddrinfo
		{"010", "tcp", 8, true},
		{" +80", "tcp", 80, true},
		{"65535", "tcp", 65535, true},
		{"ssh", "tcp", 22, true},
		{"mail", "tcp", 25, true}, // an alias
		{"domain", "udp", 53, true},
		{"http", "", 80, true}, // any protocol
		{"http", "udp", 0, false},
		{"65536", "tcp", 0, false},
		{"-1", "tcp", 0, false},
		{"", "tcp", 0, false},
		{"0x", "tcp", 0, false},
		{"SSH", "tcp", 0, false}, // names are case-sensitive
	}
	for _, tt := range tests {
		got, err := ParsePort(tt.in, tt.proto)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParsePort(%q, %q) = %d, %v; want %d ok=%v", tt.in, tt.proto, got, err, tt.want, tt.ok)
		}
	}
}

func TestPortRanges(t *testing.T) {
	requireServices(t)
	tests := []struct {
		in      string
		tcp, rc PortRange // what ParsePortRange(tcp) and parsePortRC give
		tcpErr  string    // "" = accepted
		rcErr   string
	}{
		{in: "22", tcp: PortRange{22, 22}, rc: PortRange{22, 22}},
		{in: "1024:", tcp: PortRange{1024, 65535}, rc: PortRange{1024, 65535}},
		{in: ":4", tcp: PortRange{0, 4}, rc: PortRange{0, 4}},
		{in: ":", tcp: anyPort, rc: anyPort},
		{in: "ssh:http", tcp: PortRange{22, 80}, rc: PortRange{22, 80}},
		{in: " 80", tcp: PortRange{80, 80}, rc: PortRange{80, 80}},
		// The forms where the two parsers differ.
		{in: "0x50", tcp: PortRange{80, 80}, rcErr: "does not resolve"},
		{in: "010", tcp: PortRange{8, 8}, rc: PortRange{10, 10}},
		{in: "4:3", tcpErr: "min > max", rc: PortRange{4, 3}},
		{in: "1:2:3", tcpErr: `invalid port/service "2:3"`, rcErr: "too many components"},
		{in: "-1", tcpErr: "invalid port/service", rcErr: "does not resolve"},
		{in: "65536", tcpErr: "invalid port/service", rcErr: "must be 0..65535"},
	}
	for _, tt := range tests {
		got, err := ParsePortRange(tt.in, "tcp")
		if tt.tcpErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.tcpErr) {
				t.Errorf("ParsePortRange(%q): err = %v, want %q", tt.in, err, tt.tcpErr)
			}
		} else if err != nil || got != tt.tcp {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", tt.in, got, err, tt.tcp)
		}
		got, err = parsePortRC(tt.in)
		if tt.rcErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.rcErr) {
				t.Errorf("parsePortRC(%q): err = %v, want %q", tt.in, err, tt.rcErr)
			}
		} else if err != nil || got != tt.rc {
			t.Errorf("parsePortRC(%q) = %v, %v; want %v", tt.in, got, err, tt.rc)
		}
	}
}

// TestServicesFileOrder: getservbyname and getservbyport scan the file
// from the top, so the first entry wins, for names (and aliases) as for
// ports, and a port's name is its entry's official name, not an alias.
func TestServicesFileOrder(t *testing.T) {
	db := readServices(strings.NewReader(`# comment
smtp		25/tcp		mail
zmail		25/tcp		# a later name for the same port
mail		26/tcp		# a later entry named like an earlier alias
web		80/tcp		http www
http		8080/tcp
http		81/udp
both		7/sctp
both		9/udp
broken		x/tcp
nothing
`))
	names := []struct {
		name, proto string
		want        uint16
		ok          bool
	}{
		{"smtp", "tcp", 25, true},
		{"mail", "tcp", 25, true}, // the alias comes first
		{"www", "tcp", 80, true},
		{"http", "tcp", 80, true},
		{"http", "udp", 81, true},
		{"http", "", 80, true}, // tcp before udp, as getaddrinfo tries them
		{"both", "", 9, true},  // udp before sctp, whatever the file order
		{"smtp", "udp", 0, false},
		{"broken", "tcp", 0, false},
		{"nothing", "", 0, false},
	}
	for _, tt := range names {
		got, ok := db.lookup(tt.name, tt.proto)
		if ok != tt.ok || got != tt.want {
			t.Errorf("lookup(%q, %q) = %d, %v; want %d, %v", tt.name, tt.proto, got, ok, tt.want, tt.ok)
		}
	}
	ports := []struct {
		port  uint16
		proto string
		want  string
	}{
		{25, "tcp", "smtp"}, {26, "tcp", "mail"}, {80, "tcp", "web"},
		{8080, "tcp", "http"}, {81, "udp", "http"}, {25, "udp", ""},
	}
	for _, tt := range ports {
		if got := db.byPort[servicePort{tt.port, tt.proto}]; got != tt.want {
			t.Errorf("byPort(%d/%s) = %q, want %q", tt.port, tt.proto, got, tt.want)
		}
	}
}

func TestServiceName(t *testing.T) {
	requireServices(t)
	// /etc/services: "smtp 25/tcp mail" lists as smtp, as getservbyport.
	if n, ok := ServiceName(25, "tcp"); !ok || n != "smtp" {
		t.Errorf("ServiceName(25, tcp) = %q, %v", n, ok)
	}
	if n, ok := ServiceName(80, "udp"); ok {
		t.Errorf("http is tcp-only in /etc/services; ServiceName(80, udp) = %q", n)
	}
}

// The fold helpers are C's strcasecmp and strncasecmp in the C locale:
// ASCII only, where strings.EqualFold also folds "ſ" to "s" and "K" (the
// Kelvin sign) to "k".
func TestFold(t *testing.T) {
	if !equalFold("SyN", "syn") || equalFold("syn", "sy") || equalFold("ſyn", "syn") || equalFold("\u212a", "k") {
		t.Error("equalFold")
	}
	for _, tt := range []struct {
		s, prefix string
		want      bool
	}{
		{"echo-request", "ECHO-", true}, {"echo", "", true}, {"echo", "echo", true},
		{"echo", "echoes", false}, {"echo", "ecHx", false}, {"sctp", "ſ", false},
	} {
		if got := hasPrefixFold(tt.s, tt.prefix); got != tt.want {
			t.Errorf("hasPrefixFold(%q, %q) = %v", tt.s, tt.prefix, got)
		}
	}
}
