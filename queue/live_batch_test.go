package queue

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/internal/kerneltest"
	"github.com/qtables/qtables/internal/netns"
	"github.com/qtables/qtables/matchers"
)

// liveBatchRules admit new UDP flows to port 9999 and what belongs to
// known connections; everything else leaving the namespace is dropped.
const liveBatchRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT DROP [0:0]
-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A OUTPUT -p udp -m conntrack --ctstate NEW -m udp --dport 9999 -j ACCEPT
COMMIT
`

// TestLiveBatchUDPBurst runs the daemon in a throwaway namespace, hooked
// at OUTPUT, and sends a burst of datagrams of one new UDP flow over the
// loopback device: the kernel queues them faster than the reader takes
// them, so reads hold several packets of the flow before its first is
// confirmed. The judge tracks a read in segments, so each later packet
// finds the flow its first packet confirmed: every datagram arrives, and
// the table holds the one flow counting them all. A second burst
// from another port to port 9998 is dropped whole.
func TestLiveBatchUDPBurst(t *testing.T) {
	kerneltest.Require(t, "ip", "iptables")
	ns, err := netns.New("qtq", "batch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	if err := ns.LinkUp("lo"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.v4")
	if err := os.WriteFile(rules, []byte(liveBatchRules), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	d, err := New(Config{
		RulesPath:     rules,
		Hooks:         HookConfig{Hooks: []matchers.Hook{matchers.HookOutput}, Queues: QueueRange{0, 0}},
		ControlSocket: "none",
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
		IPTables:      nsIPTables(t, ns),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- ns.Do(func() error { return d.Run(ctx) }) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-ran; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	// The hooks are in once the daemon has installed them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := ns.Exec(nil, "iptables", "-S", "OUTPUT")
		if bytes.Contains(out, []byte("QTABLES-OUTPUT")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hooks not installed:\n%s\n%s", out, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	const burst = 200
	var sink, src, other *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		if sink, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9999}); err != nil {
			return err
		}
		if src, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, sink.LocalAddr().(*net.UDPAddr)); err != nil {
			return err
		}
		other, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40001}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9998})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	defer src.Close()
	defer other.Close()
	sink.SetReadBuffer(4 << 20)
	for i := range burst {
		if _, err := src.Write(fmt.Appendf(nil, "datagram %d", i)); err != nil {
			t.Fatal(err)
		}
		other.Write([]byte("dropped"))
	}
	got := 0
	buf := make([]byte, 64)
	for got < burst {
		sink.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := sink.Read(buf); err != nil {
			break
		}
		got++
	}
	if got != burst {
		t.Errorf("%d of %d datagrams arrived", got, burst)
	}
	var flows []conntrack.Entry
	d.Conntrack().Range(time.Now(), func(e *conntrack.Entry) bool {
		if e.Confirmed() {
			flows = append(flows, *e)
		}
		return true
	})
	cs := d.Conntrack().Stats()
	if len(flows) != 1 || flows[0].Packets(conntrack.DirOriginal) != burst {
		for _, e := range flows {
			t.Logf("flow %s", e.Format(time.Now()))
		}
		t.Errorf("%d flows, want one of %d packets; table %+v", len(flows), burst, cs)
	}
	st := d.Stats()
	if st.Accepted != burst || st.Dropped != burst || st.CtDrops != 0 {
		t.Errorf("stats: %d accepted, %d dropped, %d by conntrack; want %d, %d, 0", st.Accepted, st.Dropped, st.CtDrops, burst, burst)
	}
	t.Logf("%d datagrams in %d verdict datagrams; %d clashes merged, %d inserted", st.Received, st.VerdictDatagrams, cs.ClashResolved, cs.Inserted)
	stop()
}
