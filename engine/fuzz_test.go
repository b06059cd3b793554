package engine

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary rules files to the parser: it must never panic,
// and whatever it accepts must print back to a file that parses to the
// same printed form (parse then print is stable).
func FuzzParse(f *testing.F) {
	f.Add(sampleRules)
	for _, line := range []string{
		"-A INPUT -p tcp --dport 22 -j ACCEPT",
		"-A INPUT -p tcp -m tcp --tcp-flags SYN,ACK SYN -m multiport --dports 1:3,80",
		"-A FORWARD -p icmp --icmp-type echo-request -j LOG --log-prefix \"x \\\" y\"",
		"-A INPUT -m comment --comment \"a b\" -j MARK --set-mark 0x1/0xff",
		"-A INPUT -s 1.1.1.1,2.2.2.2 ! -i eth+ -f -j REJECT --reject-with tcp-reset",
		"-A INPUT -m iprange --src-range 1.1.1.1-1.1.1.9 -m length --length 10:20 -m ttl --ttl-gt 3",
		"-I INPUT 1 -j DROP", "-D INPUT 1", "-N X", "-X X", "-P INPUT DROP", "-Z", "-F",
	} {
		f.Add("*filter\n:X - [0:0]\n" + line + "\nCOMMIT\n")
	}
	f.Fuzz(func(t *testing.T, in string) {
		rs, err := Parse("fuzz", strings.NewReader(in))
		if err != nil {
			if _, ok := err.(*Error); !ok && !strings.HasPrefix(err.Error(), "fuzz") {
				t.Fatalf("error without position: %v", err)
			}
			return
		}
		var a bytes.Buffer
		if err := rs.Save(&a, SaveOptions{Counters: true}); err != nil {
			t.Fatal(err)
		}
		rs2, err := Parse("again", bytes.NewReader(a.Bytes()))
		if err != nil {
			t.Fatalf("printed form does not parse: %v\n%s", err, a.String())
		}
		var b bytes.Buffer
		rs2.Save(&b, SaveOptions{Counters: true})
		if a.String() != b.String() {
			t.Fatalf("unstable:\n%s\nvs\n%s", a.String(), b.String())
		}
		if _, err := Compile(rs); err != nil {
			t.Fatalf("accepted rules do not compile: %v", err)
		}
	})
}
