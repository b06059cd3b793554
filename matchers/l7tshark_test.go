package matchers

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/qtables/qtables/packet"
)

// Evidence on traffic no one here made: for every capture in
// ../shared/pcaps (from the project root), the TLS server names, HTTP
// hosts and DNS query names that qtables' parsers read, flow by flow
// through l7Stream, must be the set tshark reads from the same file.

// sharedPcaps is ../shared/pcaps from the project root, seen from this
// package's directory.
const sharedPcaps = "../../shared/pcaps"

// requireTshark skips the test when tshark is missing, or fails it under
// CI, where scripts/deps.sh installs it.
func requireTshark(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("tshark")
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("tshark is not installed, and CI must compare with it (scripts/deps.sh installs the Debian package tshark)")
	}
	t.Skipf("tshark is not installed (apt-get install tshark, or scripts/deps.sh): the tshark comparison is skipped")
	return ""
}

// tsharkRows runs tshark on file with a display filter and returns, for
// each packet it selects, the values of each field (a field with several
// occurrences, e.g. 20 DNS queries in one segment, has several values).
func tsharkRows(t *testing.T, tshark, file, filter string, fields ...string) [][][]string {
	t.Helper()
	const agg = "\x1e" // not in any value, unlike tshark's default ','
	args := []string{"-r", file, "-T", "fields", "-E", "aggregator=" + agg, "-Y", filter}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command(tshark, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no user preferences
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %q: %v\n%s", args, err, stderr.String())
	}
	var rows [][][]string
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if line == "" {
			continue
		}
		var row [][]string
		for _, f := range strings.Split(line, "\t") {
			var vals []string
			if f != "" {
				vals = strings.Split(f, agg)
			}
			row = append(row, vals)
		}
		rows = append(rows, row)
	}
	return rows
}

// valueSets returns, for each field of rows, the set of its values.
func valueSets(rows [][][]string, nfields int) []map[string]bool {
	sets := make([]map[string]bool, nfields)
	for i := range sets {
		sets[i] = map[string]bool{}
	}
	for _, row := range rows {
		for i, vals := range row {
			for _, v := range vals {
				sets[i][v] = true
			}
		}
	}
	return sets
}

// maxVersions is the set of the highest TLS versions the ClientHellos of
// rows offer (fields supported_version and handshake.version): the
// largest non-GREASE supported_versions entry, else the legacy version.
func maxVersions(t *testing.T, rows [][][]string, supported, legacy int) map[string]bool {
	set := map[string]bool{}
	for _, row := range rows {
		best := uint64(0)
		for _, v := range row[supported] {
			n, err := strconv.ParseUint(v, 0, 16)
			if err != nil {
				t.Fatalf("tshark version %q: %v", v, err)
			}
			if !tlsGREASE(uint16(n)) && n > best {
				best = n
			}
		}
		if best == 0 && len(row[legacy]) > 0 {
			n, err := strconv.ParseUint(row[legacy][0], 0, 16)
			if err != nil {
				t.Fatalf("tshark version %q: %v", row[legacy][0], err)
			}
			best = n
		}
		set[versionKey(uint16(best))] = true
	}
	return set
}

func versionKey(v uint16) string { return fmt.Sprintf("0x%04x", v) }

// l7Seen are the values the parsers read from a capture.
type l7Seen struct {
	sni, alpn, version  map[string]bool
	host, method, agent map[string]bool
	qname, qtype        map[string]bool
}

// flowDir names one direction of a flow.
type flowDir struct {
	src, dst netip.AddrPort
	proto    uint8
}

// dirState is one direction's reassembly and what was read from it.
type dirState struct {
	s                 l7Stream
	tlsDone, httpDone bool
	dnsOff            int // DNS over TCP: bytes of the prefix already read
}

// l7Collector runs the parsers over a capture flow by flow.
type l7Collector struct {
	dirs    map[flowDir]*dirState
	seen    l7Seen
	scratch []byte
	depth   int
}

func newL7Collector(depth int) *l7Collector {
	return &l7Collector{
		dirs: map[flowDir]*dirState{},
		seen: l7Seen{
			sni: map[string]bool{}, alpn: map[string]bool{}, version: map[string]bool{},
			host: map[string]bool{}, method: map[string]bool{}, agent: map[string]bool{},
			qname: map[string]bool{}, qtype: map[string]bool{},
		},
		scratch: make([]byte, depth),
		depth:   depth,
	}
}

// segment is one TCP or UDP packet's transport fields.
type segment struct {
	dir     flowDir
	seq     uint32
	flags   uint8
	payload []byte
}

func (c *l7Collector) packet(sg segment) {
	if sg.dir.proto == packet.ProtoUDP {
		c.dnsMessage(sg.payload)
		return
	}
	d := c.dirs[sg.dir]
	if d == nil {
		d = &dirState{}
		d.s.buf = make([]byte, c.depth)
		c.dirs[sg.dir] = d
	}
	if sg.flags&packet.TCPSyn != 0 {
		d.s.syn(sg.seq)
		d.tlsDone, d.httpDone, d.dnsOff = false, false, 0
		sg.seq++ // data on a SYN (TFO) starts after it
	}
	if d.s.add(sg.seq, sg.payload) == 0 {
		return
	}
	p, final := d.s.prefix(), d.s.full()
	if !d.tlsDone {
		var h tlsHello
		switch parseClientHello(p, c.scratch, &h) {
		case parseOK:
			if h.hasSNI {
				c.seen.sni[string(h.sni)] = true
			}
			for l := h.alpn; len(l) > 0; {
				var name []byte
				name, l, _ = alpnNext(l)
				c.seen.alpn[string(name)] = true
			}
			c.seen.version[versionKey(h.maxVersion)] = true
			d.tlsDone = true
		case parseInvalid:
			d.tlsDone = true
		}
	}
	if !d.httpDone {
		var r httpRequest
		switch parseHTTPRequest(p, final, &r) {
		case parseOK:
			if r.hasHost {
				c.seen.host[string(r.host)] = true
			}
			if r.hasUA {
				c.seen.agent[string(r.userAgent)] = true
			}
			c.seen.method[string(r.method)] = true
			d.httpDone = true
		case parseInvalid:
			d.httpDone = true
		}
	}
	for d.dnsOff >= 0 {
		msg, _, st := dnsTCPMessage(p[d.dnsOff:])
		if st != parseOK {
			if st == parseInvalid {
				d.dnsOff = -1
			}
			break
		}
		if !c.dnsMessage(msg) {
			d.dnsOff = -1
			break
		}
		d.dnsOff += 2 + len(msg)
	}
}

// dnsMessage records the question names of a query; false when msg is
// not DNS.
func (c *l7Collector) dnsMessage(msg []byte) bool {
	var r dnsReader
	var h dnsHeader
	if !parseDNSMessage(msg, &r, &h) {
		return false
	}
	var q dnsQuestion
	for r.next(&q) {
		if !h.response() {
			c.seen.qname[string(q.qname())] = true
			c.seen.qtype[strconv.Itoa(int(q.qtype))] = true
		}
	}
	return true
}

// captureSegments reads every TCP and UDP packet of file, IPv4 through
// packet.View and, since the View decodes IPv4 only, IPv6 (without
// extension headers) from the raw frame.
func captureSegments(t *testing.T, file string, fn func(segment)) {
	t.Helper()
	cr, err := packet.OpenCapture(file)
	if err != nil {
		t.Fatal(err)
	}
	defer cr.Close()
	var v packet.View
	for {
		_, err := cr.Next(&v)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if v.Class == packet.ClassOK && v.Family == 4 {
			if !v.HasTransport || v.FragOff() != 0 || (v.Proto != packet.ProtoTCP && v.Proto != packet.ProtoUDP) {
				continue
			}
			sg := segment{dir: flowDir{netip.AddrPortFrom(v.Src, v.SrcPort), netip.AddrPortFrom(v.Dst, v.DstPort), v.Proto}, payload: v.Payload}
			if v.Proto == packet.ProtoTCP {
				sg.seq, sg.flags = binary.BigEndian.Uint32(v.L4[4:]), v.TCPFlags
			}
			fn(sg)
			continue
		}
		if sg, ok := ipv6Segment(cr.Data(), cr.LinkType()); ok {
			fn(sg)
		}
	}
}

// ipv6Segment decodes Ethernet (with 802.1Q tags) or raw IP frames
// carrying IPv6 with TCP or UDP right after the fixed header.
func ipv6Segment(frame []byte, linkType uint16) (segment, bool) {
	b := frame
	switch linkType {
	case packet.LinkTypeEthernet:
		if len(b) < 14 {
			return segment{}, false
		}
		et := binary.BigEndian.Uint16(b[12:])
		b = b[14:]
		for et == 0x8100 || et == 0x88a8 {
			if len(b) < 4 {
				return segment{}, false
			}
			et, b = binary.BigEndian.Uint16(b[2:]), b[4:]
		}
		if et != 0x86dd {
			return segment{}, false
		}
	case packet.LinkTypeRaw:
	default:
		return segment{}, false
	}
	if len(b) < 40 || b[0]>>4 != 6 {
		return segment{}, false
	}
	plen := int(binary.BigEndian.Uint16(b[4:]))
	next := b[6]
	src, _ := netip.AddrFromSlice(b[8:24])
	dst, _ := netip.AddrFromSlice(b[24:40])
	l4 := b[40:min(len(b), 40+plen)]
	sg := segment{dir: flowDir{proto: next}}
	switch next {
	case packet.ProtoTCP:
		if len(l4) < 20 || int(l4[12]>>4)*4 > len(l4) {
			return segment{}, false
		}
		sg.seq, sg.flags, sg.payload = binary.BigEndian.Uint32(l4[4:]), l4[13], l4[int(l4[12]>>4)*4:]
	case packet.ProtoUDP:
		if len(l4) < 8 {
			return segment{}, false
		}
		sg.payload = l4[8:]
	default:
		return segment{}, false
	}
	sg.dir.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4))
	sg.dir.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	return sg, true
}

func TestTsharkAgreement(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(sharedPcaps, "*.pcap*"))
	if len(files) == 0 {
		t.Skipf("no captures in %s (../shared/pcaps from the project root is absent): the tshark comparison is skipped", sharedPcaps)
	}
	tshark := requireTshark(t)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			c := newL7Collector(4096)
			captureSegments(t, file, c.packet)
			// One tshark run per protocol, with the brief's display filters.
			tlsRows := tsharkRows(t, tshark, file, "tls.handshake.type==1",
				"tls.handshake.extensions_server_name", "tls.handshake.extensions_alpn_str",
				"tls.handshake.extensions.supported_version", "tls.handshake.version")
			httpRows := tsharkRows(t, tshark, file, "http.request", "http.host", "http.request.method", "http.user_agent")
			dnsRows := tsharkRows(t, tshark, file, "dns.flags.response==0", "dns.qry.name", "dns.qry.type")
			tlsSets, httpSets, dnsSets := valueSets(tlsRows, 4), valueSets(httpRows, 3), valueSets(dnsRows, 2)
			for _, cmp := range []struct {
				what      string
				got, want map[string]bool
			}{
				{"TLS SNI", c.seen.sni, tlsSets[0]},
				{"HTTP host", c.seen.host, httpSets[0]},
				{"DNS qname", c.seen.qname, dnsSets[0]},
				// Beyond the bar: the other fields the matches read.
				{"TLS ALPN", c.seen.alpn, tlsSets[1]},
				{"TLS highest version", c.seen.version, maxVersions(t, tlsRows, 2, 3)},
				{"HTTP method", c.seen.method, httpSets[1]},
				{"HTTP user agent", c.seen.agent, httpSets[2]},
				{"DNS qtype", c.seen.qtype, dnsSets[1]},
			} {
				got, want := sortedKeys(cmp.got), sortedKeys(cmp.want)
				if !slices.Equal(got, want) {
					t.Errorf("%s: qtables reads %q, tshark %q", cmp.what, got, want)
				} else if len(got) > 0 {
					t.Logf("%s: %d values agree %q", cmp.what, len(got), got)
				}
			}
		})
	}
}
