package queue

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/qtables/qtables/matchers"
)

// TestControlAtomic: a control command that fails leaves the compiled
// rules in force untouched; one that succeeds swaps in a new compiled set
// in which unchanged rules keep their counters.
func TestControlAtomic(t *testing.T) {
	var logs bytes.Buffer
	d := testDaemon(t, testRules, &bytes.Buffer{}, &logs)
	ctx := context.Background()
	j := NewJudge(matchers.Accept)
	m := fwdMeta()
	p := tcpSyn("10.0.1.2", "10.0.2.2", 40000, 82)
	if out := j.Judge(d.Rules(), p, &m); out.Verdict != matchers.Drop {
		t.Fatalf("port 82: %v, want the DROP policy", out.Verdict)
	}
	before := d.Rules()
	icmp := before.Set.Table("filter").Chain("FORWARD").Rules[3]
	icmp.Counters.Set(5, 420)
	for _, args := range [][]string{
		{"-D", "FORWARD", "99"},
		{"-A", "FORWARD", "-j", "NOPE"},
		{"-X", "FORWARD"},
	} {
		rep := d.control(ctx, &ControlRequest{Op: OpIptables, Args: args})
		if rep.Code != 1 || !strings.HasPrefix(rep.Stderr, "qtables: ") {
			t.Errorf("%q: %+v, want exit 1 with the reason", args, rep)
		}
		if d.Rules() != before {
			t.Errorf("%q failed but swapped the rules", args)
		}
	}
	if rep := d.control(ctx, &ControlRequest{Op: OpIptables, Args: []string{"-A", "FORWARD", "--nope"}}); rep.Code != 2 {
		t.Errorf("unparsable command: %+v, want exit 2", rep)
	}
	rep := d.control(ctx, &ControlRequest{Op: OpIptables, Args: []string{"-I", "FORWARD", "1", "-p", "tcp", "--dport", "82", "-j", "ACCEPT"}})
	if rep.Code != 0 {
		t.Fatalf("-I: %+v", rep)
	}
	if d.Rules() == before {
		t.Fatal("-I did not swap the rules")
	}
	if out := j.Judge(d.Rules(), p, &m); out.Verdict != matchers.Accept {
		t.Errorf("port 82 after -I: %v, want ACCEPT", out.Verdict)
	}
	if pk, b := d.Rules().Set.Table("filter").Chain("FORWARD").Rules[4].Counters.Get(); pk != 5 || b != 420 {
		t.Errorf("the unchanged ICMP rule has counters %d/%d after -I, want 5/420", pk, b)
	}
	// -Z works on the rules in force, without a swap.
	cur := d.Rules()
	if rep := d.control(ctx, &ControlRequest{Op: OpIptables, Args: []string{"-Z", "FORWARD"}}); rep.Code != 0 || d.Rules() != cur {
		t.Errorf("-Z: %+v, swapped %v", rep, d.Rules() != cur)
	}
	if pk, _ := cur.Set.Table("filter").Chain("FORWARD").Rules[4].Counters.Get(); pk != 0 {
		t.Errorf("-Z left %d packets", pk)
	}
	// A restore that does not hook FORWARD any more is refused.
	rep = d.control(ctx, &ControlRequest{Op: OpRestore, Input: "*raw\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"})
	if rep.Code != 1 || d.Rules() != cur {
		t.Errorf("restore without a FORWARD chain: %+v", rep)
	}
	rep = d.control(ctx, &ControlRequest{Op: OpSave})
	if rep.Code != 0 || !strings.Contains(rep.Stdout, "-A FORWARD -p tcp -m tcp --dport 82 -j ACCEPT") {
		t.Errorf("save: %+v", rep)
	}
}
