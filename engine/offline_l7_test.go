package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// sharedCapture returns a capture from the shared test set (../shared
// beside the project), or skips where it is absent (a user's clone).
func sharedCapture(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("..", "..", "shared", "pcaps", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared capture %s not found (../shared is present only in CI and the developers' workspace): %v", name, err)
	}
	return p
}

// TestOfflineL7 runs qtables' application-layer matches end to end through
// the offline runner on public captures: a ClientHello split over several
// TCP segments (SNI www.google.com), and HTTP requests. The rules DROP the
// flows they recognise; a rule for another name must decide nothing.
func TestOfflineL7(t *testing.T) {
	tests := []struct {
		capture, rules string
		hitRule        int // the rule that must decide some packets
		missRule       int // the rule that must decide none
	}{
		{"tls_tls-client-hello-frag-01_dump_mtu300.pcap", `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tls --sni example.org -j DROP
-A FORWARD -p tcp -m tls --sni *.google.com -j DROP
COMMIT
`, 2, 1},
		{"http-all-headers_input.pcap", `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m http --method DELETE -j DROP
-A FORWARD -p tcp -m http --method GET -j DROP
COMMIT
`, 2, 1},
	}
	for _, tt := range tests {
		capture := sharedCapture(t, tt.capture)
		p := compileRules(t, tt.rules)
		off := &Offline{Chain: "FORWARD"}
		decided := map[int]int{}
		_, err := off.Run(context.Background(), p, capture, func(v *Verdict) error {
			if !v.Skipped {
				decided[v.Result.Rule]++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if decided[tt.hitRule] == 0 || decided[tt.missRule] != 0 {
			t.Errorf("%s: packets decided per rule %v: want some by rule %d, none by rule %d", tt.capture, decided, tt.hitRule, tt.missRule)
		}
	}
}
