package matchers

// The HTTP/1.x request parser behind -m http (RFC 9112 sections 3 and 5:
// request line and header fields).
//
// It reads a TCP stream's first bytes and does not allocate: the fields
// alias the stream. It is strict where strictness tells HTTP from other
// traffic (the request line: a token method, one space, a target without
// spaces or controls, one space, HTTP/1.x) and lenient where real clients
// are sloppy (bare LF line ends, header lines it cannot read, which it
// skips, as tshark and most servers do).

import "bytes"

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
