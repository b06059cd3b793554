package matchers

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// goRequest serialises req with net/http, an implementation independent
// of the parser under test.
func goRequest(t testing.TB, method, url, ua string) []byte {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader("body-bytes"))
	if err != nil {
		t.Fatal(err)
	}
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	req.Header.Set("X-Extra", "1")
	var b bytes.Buffer
	if err := req.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestParseHTTPRequestGo(t *testing.T) {
	tests := []struct {
		method, url, ua      string
		host, target, wantUA string
	}{
		{"GET", "http://www.example.com/index.html?q=1", "curl/8.5.0", "www.example.com", "/index.html?q=1", "curl/8.5.0"},
		{"POST", "http://api.example.com:8080/v1/items", "", "api.example.com:8080", "/v1/items", "Go-http-client/1.1"},
		{"PROPFIND", "http://dav.example/a%20b/", "x", "dav.example", "/a%20b/", "x"},
	}
	for _, tt := range tests {
		raw := goRequest(t, tt.method, tt.url, tt.ua)
		var r httpRequest
		if st := parseHTTPRequest(raw, false, &r); st != parseOK {
			t.Fatalf("%s %s: parse = %d\n%s", tt.method, tt.url, st, raw)
		}
		if string(r.method) != tt.method || string(r.target) != tt.target || string(r.host) != tt.host ||
			string(r.userAgent) != tt.wantUA || !r.complete || r.minor != 1 {
			t.Errorf("%s %s: got method %q target %q host %q ua %q complete %v minor %d",
				tt.method, tt.url, r.method, r.target, r.host, r.userAgent, r.complete, r.minor)
		}
		// Every prefix before the end of the header section needs more.
		end := bytes.Index(raw, []byte("\r\n\r\n")) + 4
		for n := 0; n < end; n++ {
			if st := parseHTTPRequest(raw[:n], false, &r); st != parseMore {
				t.Fatalf("%s: prefix %d/%d: parse = %d, want more", tt.url, n, end, st)
			}
		}
	}
}

func TestParseHTTPRequestCases(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		final  bool
		want   l7Parse
		host   string
		hasUA  bool
		method string
	}{
		{"lf only", "GET / HTTP/1.0\nhost: h.test\n\n", false, parseOK, "h.test", false, "GET"},
		{"ows trimmed", "GET / HTTP/1.1\r\nHost: \t h.test \t\r\nUser-Agent:  \r\n\r\n", false, parseOK, "h.test", true, "GET"},
		{"first host wins", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false, parseOK, "a", false, "GET"},
		{"bad line skipped", "GET / HTTP/1.1\r\n\x01garbage\r\n continued\r\nHost: a\r\n\r\n", false, parseOK, "a", false, "GET"},
		{"no host", "GET / HTTP/1.1\r\n\r\n", false, parseOK, "", false, "GET"},
		{"cut by depth", "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x", true, parseOK, "a", false, "GET"},
		{"cut, not final", "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x", false, parseMore, "", false, ""},
		{"request line cut, final", "GET /very/long", true, parseInvalid, "", false, ""},
		{"http2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false, parseInvalid, "", false, ""},
		{"response", "HTTP/1.1 200 OK\r\n\r\n", false, parseInvalid, "", false, ""},
		{"two spaces", "GET  / HTTP/1.1\r\n\r\n", false, parseInvalid, "", false, ""},
		{"lower method is a token", "get / HTTP/1.1\r\n\r\n", false, parseOK, "", false, "get"},
		{"long method", strings.Repeat("A", 25) + " / HTTP/1.1\r\n\r\n", false, parseInvalid, "", false, ""},
		{"version 1.12", "GET / HTTP/1.12\r\n\r\n", false, parseInvalid, "", false, ""},
		{"control in target", "GET /\x00 HTTP/1.1\r\n\r\n", false, parseInvalid, "", false, ""},
		{"tls", "\x16\x03\x01\x02\x00", false, parseInvalid, "", false, ""},
		{"empty", "", false, parseMore, "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r httpRequest
			st := parseHTTPRequest([]byte(tt.in), tt.final, &r)
			if st != tt.want {
				t.Fatalf("parse = %d, want %d", st, tt.want)
			}
			if st == parseOK && (string(r.host) != tt.host || r.hasUA != tt.hasUA || string(r.method) != tt.method) {
				t.Errorf("host %q hasUA %v method %q", r.host, r.hasUA, r.method)
			}
		})
	}
}

func BenchmarkParseHTTPRequest(b *testing.B) {
	raw := []byte("GET /wiki/Main_Page HTTP/1.1\r\nHost: en.wikipedia.org\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
		"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
		"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Connection: keep-alive\r\nCookie: session=0123456789abcdef; theme=dark\r\n" +
		"Upgrade-Insecure-Requests: 1\r\n\r\n")
	var r httpRequest
	b.ReportAllocs()
	cpu := startCPUTimer()
	defer cpu.report(b, 0)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if parseHTTPRequest(raw, false, &r) != parseOK {
			b.Fatal("parse failed")
		}
	}
}
