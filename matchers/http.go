package matchers

// The http match, a qtables extension: it matches the packets of TCP
// connections whose first HTTP/1.x request (read once per flow from the
// stream's first bytes, see l7.go) has a given Host, method, path or
// User-Agent. From the packet that completes the request's header section
// on, every packet of the flow, both directions, sees its values; until
// then, and for flows that open with anything else, the match fails,
// negated or not. A header section longer than the depth is read up to
// its last complete line.
//
//	-m http [!] --host NAME[,NAME...]   the Host field without its port,
//	                                    names as tls --sni ("*.suffix")
//	-m http [!] --method M[,M...]       the method, exactly (methods are
//	                                    case-sensitive)
//	-m http [!] --path PREFIX           the request target's path starts
//	                                    with PREFIX (an absolute-form target
//	                                    "http://host/p" is read as "/p")
//	-m http [!] --user-agent TEXT       the User-Agent field contains TEXT,
//	                                    without regard to ASCII case
//
// A request without Host or User-Agent fails the option, so "!" matches it.
//
// The HTTP/1.x request parser behind it (RFC 9112 sections 3 and 5:
// request line and header fields).
//
// It reads a TCP stream's first bytes and does not allocate: the fields
// alias the stream. It is strict where strictness tells HTTP from other
// traffic (the request line: a token method, one space, a target without
// spaces or controls, one space, HTTP/1.x) and lenient where real clients
// are sloppy (bare LF line ends, header lines it cannot read, which it
// skips, as tshark and most servers do).

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/qtables/qtables/packet"
)

// httpRequest is what the http match needs from a request.
type httpRequest struct {
	method, target []byte
	// minor is the x of HTTP/1.x.
	minor byte
	// host and userAgent are the values of the first Host and User-Agent
	// fields, without surrounding white space; has* say whether the field
	// was present.
	host, userAgent []byte
	hasHost, hasUA  bool
	// complete reports that the header section ended (empty line) within
	// the bytes parsed; otherwise the fields come from the complete lines
	// of a header section cut by the stream depth.
	complete bool
}

// httpMaxMethod bounds a method's length: the longest registered method
// (UPDATEREDIRECTREF) has 17 characters; a longer token is not taken for a
// method, so binary protocols are rejected after a few bytes.
const httpMaxMethod = 24

// parseHTTPRequest parses the request at the start of stream. final says
// that no more bytes will come (the stream depth is reached): a request
// whose header section is cut then yields the fields of its complete
// lines.
func parseHTTPRequest(stream []byte, final bool, r *httpRequest) l7Parse {
	*r = httpRequest{}
	b := stream
	// Method: 1*tchar followed by SP.
	i := 0
	for i < len(b) && isTchar(b[i]) {
		i++
	}
	switch {
	case i > httpMaxMethod:
		return parseInvalid
	case i == len(b):
		return moreOrInvalid(final)
	case i == 0 || b[i] != ' ':
		return parseInvalid
	}
	r.method = b[:i]
	b = b[i+1:]
	// Target: visible ASCII or obs-text, up to SP.
	i = 0
	for i < len(b) && b[i] > ' ' && b[i] != 0x7f {
		i++
	}
	switch {
	case i == len(b):
		return moreOrInvalid(final)
	case i == 0 || b[i] != ' ':
		return parseInvalid
	}
	r.target = b[:i]
	b = b[i+1:]
	// Version: HTTP/1.DIGIT, then CRLF or LF.
	const proto = "HTTP/1."
	for i = 0; i < len(proto) && i < len(b); i++ {
		if b[i] != proto[i] {
			return parseInvalid
		}
	}
	if len(b) < len(proto)+2 {
		return moreOrInvalid(final)
	}
	if c := b[len(proto)]; c < '0' || c > '9' {
		return parseInvalid
	}
	r.minor = b[len(proto)] - '0'
	b = b[len(proto)+1:]
	if b[0] == '\r' {
		if len(b) < 2 {
			return moreOrInvalid(final)
		}
		b = b[1:]
	}
	if b[0] != '\n' {
		return parseInvalid
	}
	b = b[1:]
	// Header fields, one per line, up to an empty line.
	for {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			if final {
				return parseOK // cut by the depth: keep what was read
			}
			return parseMore
		}
		line := b[:nl]
		b = b[nl+1:]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) == 0 {
			r.complete = true
			return parseOK
		}
		name, value, ok := httpField(line)
		if !ok {
			continue // obs-fold continuation or garbage: skipped
		}
		switch {
		case !r.hasHost && equalFoldBytes(name, "host"):
			r.host, r.hasHost = value, true
		case !r.hasUA && equalFoldBytes(name, "user-agent"):
			r.userAgent, r.hasUA = value, true
		}
	}
}

// moreOrInvalid is parseMore, or parseInvalid when no more bytes come.
func moreOrInvalid(final bool) l7Parse {
	if final {
		return parseInvalid
	}
	return parseMore
}

// httpField splits a field line into name and value: 1*tchar ":" OWS
// value OWS.
func httpField(line []byte) (name, value []byte, ok bool) {
	i := 0
	for i < len(line) && isTchar(line[i]) {
		i++
	}
	if i == 0 || i == len(line) || line[i] != ':' {
		return nil, nil, false
	}
	name, value = line[:i], line[i+1:]
	for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
		value = value[1:]
	}
	for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
		value = value[:len(value)-1]
	}
	return name, value, true
}

// tcharTable marks RFC 9110's tchar: "!#$%&'*+-.^_`|~", digits, letters.
var tcharTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isTchar(c byte) bool { return tcharTable[c] }

// equalFoldBytes is equalFold for a byte slice and a lower-case ASCII
// string, without converting b (which would allocate).
func equalFoldBytes(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		if lowerASCII(b[i]) != lower[i] {
			return false
		}
	}
	return true
}

// ---- the match ----

func init() {
	RegisterMatch(&MatchExt{
		Name: "http",
		Options: []Option{
			{Name: "host", Args: 1, Invert: true},
			{Name: "method", Args: 1, Invert: true},
			{Name: "path", Args: 1, Invert: true},
			{Name: "user-agent", Args: 1, Invert: true},
		},
		New: func() MatchBuilder { return &httpBuilder{} },
	})
}

type httpBuilder struct {
	seen map[string]bool
	m    httpMatch
}

func (b *httpBuilder) Parse(name string, args []string, invert bool) error {
	if err := once(&b.seen, name); err != nil {
		return err
	}
	m, arg := &b.m, args[0]
	switch name {
	case "host":
		var err error
		m.host, err = parseNameList(name, arg)
		m.invHost = invert
		return err
	case "method":
		l, err := parseList(name, arg)
		if err != nil {
			return err
		}
		for _, meth := range l {
			for i := 0; i < len(meth); i++ {
				if !isTchar(meth[i]) {
					return fmt.Errorf("--method: %q is not an HTTP method token", meth)
				}
			}
			if len(meth) > httpMaxMethod {
				return fmt.Errorf("--method: %q is longer than %d characters", meth, httpMaxMethod)
			}
		}
		m.methods, m.invMethod = l, invert
	case "path":
		if arg == "" {
			return fmt.Errorf("--path needs a prefix")
		}
		m.path, m.invPath, m.hasPath = arg, invert, true
	case "user-agent":
		if arg == "" {
			return fmt.Errorf("--user-agent needs a text")
		}
		m.ua, m.invUA, m.hasUA = arg, invert, true
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return nil
}

func (b *httpBuilder) Build(r *Rule) (Match, error) {
	if err := requireProto(r, "http", packet.ProtoTCP); err != nil {
		return nil, err
	}
	if len(b.seen) == 0 {
		return nil, errNoOption("http", "host", "method", "path", "user-agent")
	}
	m := b.m
	m.uaLower = strings.ToLower(m.ua)
	m.t = newL7Table(L7Config{}, needHTTP, nil)
	return &m, nil
}

// httpMatch holds the options; nil lists and has* false were not given.
type httpMatch struct {
	l7Base
	host                               []namePattern
	methods                            []string
	path, ua, uaLower                  string
	hasPath, hasUA                     bool
	invHost, invMethod, invPath, invUA bool
}

func (m *httpMatch) l7Needs() l7Need { return needHTTP }

// Match feeds the packet to its flow and tests the flow's request.
func (m *httpMatch) Match(c *Context) bool {
	sh, f := m.t.acquire(c)
	if f == nil {
		return false
	}
	ok := f.found&needHTTP != 0 && m.test(f)
	sh.mu.Unlock()
	return ok
}

func (m *httpMatch) test(f *l7Flow) bool {
	if m.host != nil && (f.http.hasHost && matchNames(m.host, hostWithoutPort(f.val(f.http.host)))) == m.invHost {
		return false
	}
	if m.methods != nil {
		meth, has := f.val(f.http.method), false
		for _, x := range m.methods {
			has = has || string(meth) == x
		}
		if has == m.invMethod {
			return false
		}
	}
	if m.hasPath && bytes.HasPrefix(targetPath(f.val(f.http.target)), []byte(m.path)) == m.invPath {
		return false
	}
	if m.hasUA && (f.http.hasUA && containsFold(f.val(f.http.ua), m.uaLower)) == m.invUA {
		return false
	}
	return true
}

// hostWithoutPort strips ":port" from a Host value ("[v6]:port" keeps
// its brackets).
func hostWithoutPort(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' {
		if i := bytes.IndexByte(h, ']'); i >= 0 {
			return h[:i+1]
		}
		return h
	}
	if i := bytes.LastIndexByte(h, ':'); i >= 0 {
		return h[:i]
	}
	return h
}

// targetPath returns the path (and query) of a request target: an
// absolute-form "scheme://authority/path" yields "/path" ("/" without
// one); other forms are returned as they are.
func targetPath(t []byte) []byte {
	i := bytes.Index(t, []byte("://"))
	if i <= 0 || bytes.IndexByte(t[:i], '/') >= 0 {
		return t
	}
	rest := t[i+3:]
	if j := bytes.IndexByte(rest, '/'); j >= 0 {
		return rest[j:]
	}
	return []byte("/")
}

// containsFold reports whether s contains lower (lower case) under ASCII
// case folding.
func containsFold(s []byte, lower string) bool {
	for i := 0; i+len(lower) <= len(s); i++ {
		if equalFoldBytes(s[i:i+len(lower)], lower) {
			return true
		}
	}
	return false
}

// Save prints " [!] --host LIST [!] --method LIST [!] --path P [!] --user-agent T".
func (m *httpMatch) Save(b *strings.Builder) { m.dump(b, saveOpt) }

// List prints " http host [!]LIST method [!]LIST path [!]P user-agent [!]T".
func (m *httpMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" http")
	m.dump(b, listOpt)
}

func (m *httpMatch) dump(b *strings.Builder, opt func(*strings.Builder, string, bool, func(*strings.Builder))) {
	if m.host != nil {
		opt(b, "host", m.invHost, func(b *strings.Builder) { writeNameList(b, m.host) })
	}
	if m.methods != nil {
		opt(b, "method", m.invMethod, func(b *strings.Builder) { b.WriteString(strings.Join(m.methods, ",")) })
	}
	if m.hasPath {
		opt(b, "path", m.invPath, func(b *strings.Builder) { saveToken(b, m.path) })
	}
	if m.hasUA {
		opt(b, "user-agent", m.invUA, func(b *strings.Builder) { saveToken(b, m.ua) })
	}
}
