package queue

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-iptables/iptables"

	"github.com/qtables/qtables/internal/kerneltest"
	"github.com/qtables/qtables/internal/netns"
	"github.com/qtables/qtables/matchers"
)

// fakeIPT is an in-memory iptables with the behaviour Hooks relies on:
// -S listing, first-match delete, 1-based positions, and -X refusing a
// chain that is still referenced (as the kernel does).
type fakeIPT struct {
	chains map[string]map[string][]string // table -> chain -> rule specs
	calls  []string
}

func newFakeIPT() *fakeIPT {
	f := &fakeIPT{chains: map[string]map[string][]string{
		"filter": {"INPUT": nil, "FORWARD": nil, "OUTPUT": nil},
		"mangle": {"PREROUTING": nil, "INPUT": nil, "FORWARD": nil, "OUTPUT": nil, "POSTROUTING": nil},
	}}
	return f
}

func builtinChain(name string) bool {
	_, ok := matchers.HookByName(name)
	return ok
}

func (f *fakeIPT) chain(table, chain string) ([]string, error) {
	r, ok := f.chains[table][chain]
	if !ok {
		return nil, fmt.Errorf("iptables: chain %s/%s does not exist", table, chain)
	}
	return r, nil
}

func (f *fakeIPT) ListChains(table string) ([]string, error) {
	var out []string
	for c := range f.chains[table] {
		out = append(out, c)
	}
	slices.Sort(out)
	return out, nil
}

func (f *fakeIPT) ChainExists(table, chain string) (bool, error) {
	_, ok := f.chains[table][chain]
	return ok, nil
}

func (f *fakeIPT) NewChain(table, chain string) error {
	f.calls = append(f.calls, "-N "+table+" "+chain)
	if _, ok := f.chains[table][chain]; ok {
		return fmt.Errorf("chain %s exists", chain)
	}
	f.chains[table][chain] = nil
	return nil
}

func (f *fakeIPT) List(table, chain string) ([]string, error) {
	rules, err := f.chain(table, chain)
	if err != nil {
		return nil, err
	}
	out := []string{"-N " + chain}
	if builtinChain(chain) {
		out = []string{"-P " + chain + " ACCEPT"}
	}
	for _, r := range rules {
		out = append(out, "-A "+chain+" "+r)
	}
	return out, nil
}

func (f *fakeIPT) ListWithCounters(table, chain string) ([]string, error) {
	rules, err := f.chain(table, chain)
	if err != nil {
		return nil, err
	}
	out := []string{"-N " + chain}
	for i, r := range rules {
		out = append(out, fmt.Sprintf("-A %s -c %d %d %s", chain, i+1, 100*(i+1), r))
	}
	return out, nil
}

func (f *fakeIPT) Append(table, chain string, spec ...string) error {
	f.calls = append(f.calls, "-A "+table+" "+chain+" "+strings.Join(spec, " "))
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	f.chains[table][chain] = append(rules, strings.Join(spec, " "))
	return nil
}

func (f *fakeIPT) Insert(table, chain string, pos int, spec ...string) error {
	f.calls = append(f.calls, fmt.Sprintf("-I %s %s %d %s", table, chain, pos, strings.Join(spec, " ")))
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	if pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("index of insertion too big")
	}
	f.chains[table][chain] = slices.Insert(rules, pos-1, strings.Join(spec, " "))
	return nil
}

func (f *fakeIPT) Delete(table, chain string, spec ...string) error {
	f.calls = append(f.calls, "-D "+table+" "+chain+" "+strings.Join(spec, " "))
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	i := slices.Index(rules, strings.Join(spec, " "))
	if i < 0 {
		return fmt.Errorf("bad rule (does a matching rule exist in that chain?)")
	}
	f.chains[table][chain] = slices.Delete(rules, i, i+1)
	return nil
}

func (f *fakeIPT) DeleteById(table, chain string, id int) error {
	f.calls = append(f.calls, fmt.Sprintf("-D %s %s %d", table, chain, id))
	rules, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	if id < 1 || id > len(rules) {
		return fmt.Errorf("index of deletion too big")
	}
	f.chains[table][chain] = slices.Delete(rules, id-1, id)
	return nil
}

func (f *fakeIPT) ClearAndDeleteChain(table, chain string) error {
	f.calls = append(f.calls, "-X "+table+" "+chain)
	for c, rules := range f.chains[table] {
		for _, r := range rules {
			if r == "-j "+chain {
				return fmt.Errorf("chain %s is referenced from %s: Too many links", chain, c)
			}
		}
	}
	delete(f.chains[table], chain)
	return nil
}

func TestQueueRuleSpec(t *testing.T) {
	tests := []struct {
		cfg  HookConfig
		want string
	}{
		{HookConfig{Queues: QueueRange{0, 0}, Bypass: true}, "-j NFQUEUE --queue-num 0 --queue-bypass"},
		{HookConfig{Queues: QueueRange{3, 3}}, "-j NFQUEUE --queue-num 3"},
		{HookConfig{Queues: QueueRange{0, 1}, Bypass: true}, "-j NFQUEUE --queue-balance 0:1 --queue-bypass"},
		{HookConfig{Queues: QueueRange{2, 5}, CPUFanout: true}, "-j NFQUEUE --queue-balance 2:5 --queue-cpu-fanout"},
	}
	for _, tt := range tests {
		if got := strings.Join(tt.cfg.QueueRuleSpec(), " "); got != tt.want {
			t.Errorf("%+v: got %q, want %q", tt.cfg, got, tt.want)
		}
	}
}

func TestParseQueueRange(t *testing.T) {
	tests := []struct {
		in   string
		want QueueRange
		err  bool
	}{
		{"0", QueueRange{0, 0}, false},
		{"0-3", QueueRange{0, 3}, false},
		{"2:5", QueueRange{2, 5}, false},
		{"65535", QueueRange{65535, 65535}, false},
		{"3-1", QueueRange{}, true},
		{"65536", QueueRange{}, true},
		{"a-b", QueueRange{}, true},
		{"", QueueRange{}, true},
	}
	for _, tt := range tests {
		got, err := ParseQueueRange(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseQueueRange(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestHookTable(t *testing.T) {
	want := map[matchers.Hook]string{
		matchers.HookPrerouting: "mangle", matchers.HookInput: "filter", matchers.HookForward: "filter",
		matchers.HookOutput: "filter", matchers.HookPostrouting: "mangle",
	}
	for h, table := range want {
		if got := HookTable(h); got != table {
			t.Errorf("HookTable(%v) = %s, want %s", h, got, table)
		}
	}
	if HookChain(matchers.HookPostrouting) != "QTABLES-POSTROUTING" {
		t.Errorf("HookChain = %s", HookChain(matchers.HookPostrouting))
	}
}

func TestHookConfigValidate(t *testing.T) {
	bad := []HookConfig{
		{},
		{Hooks: []matchers.Hook{matchers.HookInput, matchers.HookInput}},
		{Hooks: []matchers.Hook{matchers.HookNone}},
		{Hooks: []matchers.Hook{matchers.HookInput}, CPUFanout: true},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want error", c)
		}
	}
}

func TestInstallRemove(t *testing.T) {
	f := newFakeIPT()
	f.chains["filter"]["FORWARD"] = []string{"-s 10.9.9.9/32 -j DROP"}
	cfg := HookConfig{Hooks: []matchers.Hook{matchers.HookForward, matchers.HookPrerouting}, Queues: QueueRange{0, 1}, Bypass: true}
	if err := Install(f, cfg); err != nil {
		t.Fatal(err)
	}
	if got, want := f.chains["filter"]["FORWARD"], []string{"-j QTABLES-FORWARD", "-s 10.9.9.9/32 -j DROP"}; !slices.Equal(got, want) {
		t.Errorf("FORWARD = %q, want %q", got, want)
	}
	if got, want := f.chains["filter"]["QTABLES-FORWARD"], []string{"-j NFQUEUE --queue-balance 0:1 --queue-bypass"}; !slices.Equal(got, want) {
		t.Errorf("QTABLES-FORWARD = %q, want %q", got, want)
	}
	if got, want := f.chains["mangle"]["PREROUTING"], []string{"-j QTABLES-PREROUTING"}; !slices.Equal(got, want) {
		t.Errorf("mangle PREROUTING = %q, want %q", got, want)
	}
	// Installing again changes nothing.
	if err := Install(f, cfg); err != nil {
		t.Fatal(err)
	}
	if got := f.chains["filter"]["FORWARD"]; len(got) != 2 {
		t.Errorf("second install: FORWARD = %q", got)
	}
	if got := f.chains["filter"]["QTABLES-FORWARD"]; len(got) != 1 {
		t.Errorf("second install: QTABLES-FORWARD = %q", got)
	}
	hooks, err := Find(f)
	if err != nil || !slices.Equal(hooks, []matchers.Hook{matchers.HookPrerouting, matchers.HookForward}) {
		t.Errorf("Find = %v, %v", hooks, err)
	}
	st, err := Status(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[1].Hook != matchers.HookForward || st[1].Jumps != 1 || !st[1].First || st[1].Packets != 1 || st[1].Bytes != 100 {
		t.Errorf("Status = %+v", st)
	}
	if err := Remove(f, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := f.chains["filter"]["FORWARD"], []string{"-s 10.9.9.9/32 -j DROP"}; !slices.Equal(got, want) {
		t.Errorf("after remove FORWARD = %q, want %q", got, want)
	}
	if hooks, _ := Find(f); len(hooks) != 0 {
		t.Errorf("after remove, hooks left: %v", hooks)
	}
	// Removing what is not there is fine.
	if err := Remove(f, []matchers.Hook{matchers.HookInput}); err != nil {
		t.Errorf("remove missing hook: %v", err)
	}
}

// A killed run leaves its chain with another queue rule and, if a human
// re-ran an install by hand, several jumps not at the head: Install ends
// with one jump first and only the new rule.
func TestInstallReplacesStale(t *testing.T) {
	f := newFakeIPT()
	f.chains["filter"]["QTABLES-INPUT"] = []string{"-j NFQUEUE --queue-num 7", "-j NFQUEUE --queue-num 8"}
	f.chains["filter"]["INPUT"] = []string{"-i lo -j ACCEPT", "-j QTABLES-INPUT", "-p tcp -j ACCEPT", "-j QTABLES-INPUT"}
	cfg := HookConfig{Hooks: []matchers.Hook{matchers.HookInput}, Queues: QueueRange{0, 0}, Bypass: true}
	if err := Install(f, cfg); err != nil {
		t.Fatal(err)
	}
	if got, want := f.chains["filter"]["QTABLES-INPUT"], []string{"-j NFQUEUE --queue-num 0 --queue-bypass"}; !slices.Equal(got, want) {
		t.Errorf("QTABLES-INPUT = %q, want %q", got, want)
	}
	if got, want := f.chains["filter"]["INPUT"], []string{"-j QTABLES-INPUT", "-i lo -j ACCEPT", "-p tcp -j ACCEPT"}; !slices.Equal(got, want) {
		t.Errorf("INPUT = %q, want %q", got, want)
	}
	// The new rule went in before the old ones went out: the chain was
	// never empty while the jump was live.
	appendAt, deleteAt := -1, -1
	for i, c := range f.calls {
		if strings.HasPrefix(c, "-A filter QTABLES-INPUT") && appendAt < 0 {
			appendAt = i
		}
		if strings.HasPrefix(c, "-D filter QTABLES-INPUT") && deleteAt < 0 {
			deleteAt = i
		}
	}
	if appendAt < 0 || deleteAt < appendAt {
		t.Errorf("calls %q: want the append before the deletes", f.calls)
	}
}

// TestHooksKernel runs Install, Status and Remove through go-iptables and
// the real iptables binary, inside a throwaway namespace: go-iptables is
// pointed at a wrapper that runs iptables under `ip netns exec`.
func TestHooksKernel(t *testing.T) {
	kerneltest.Require(t, "ip", "iptables")
	ns, err := netns.New("qtq", "hooks")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	ipt := nsIPTables(t, ns)
	if _, err := ns.Exec(nil, "iptables", "-A", "FORWARD", "-s", "10.9.9.9", "-j", "DROP"); err != nil {
		t.Fatal(err)
	}
	cfg := HookConfig{Hooks: []matchers.Hook{matchers.HookForward, matchers.HookPostrouting}, Queues: QueueRange{0, 1}, Bypass: true}
	if err := Install(ipt, cfg); err != nil {
		t.Fatal(err)
	}
	save := func(table string) string {
		out, err := ns.Exec(nil, "iptables", "-t", table, "-S")
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if got, want := save("filter"), "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N QTABLES-FORWARD\n"+
		"-A FORWARD -j QTABLES-FORWARD\n-A FORWARD -s 10.9.9.9/32 -j DROP\n"+
		"-A QTABLES-FORWARD -j NFQUEUE --queue-balance 0:1 --queue-bypass\n"; got != want {
		t.Errorf("filter after install:\n%s\nwant:\n%s", got, want)
	}
	if got := save("mangle"); !strings.Contains(got, "-A POSTROUTING -j QTABLES-POSTROUTING\n") ||
		!strings.Contains(got, "-A QTABLES-POSTROUTING -j NFQUEUE --queue-balance 0:1 --queue-bypass\n") {
		t.Errorf("mangle after install:\n%s", got)
	}
	// A second run with other queues and the fast path replaces the rules
	// in place; iptables prints them back exactly as ChainSpecs spells them.
	cfg.Queues, cfg.Bypass, cfg.OffloadMask = QueueRange{4, 4}, false, 0x40000000
	if err := Install(ipt, cfg); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"-A QTABLES-FORWARD -m connmark --mark 0x40000000/0x40000000 -j ACCEPT",
		"-A QTABLES-FORWARD -m mark --mark 0x40000000/0x40000000 -j CONNMARK --set-xmark 0x40000000/0x40000000",
		"-A QTABLES-FORWARD -m mark --mark 0x40000000/0x40000000 -j ACCEPT",
		"-A QTABLES-FORWARD -j NFQUEUE --queue-num 4",
	}
	for i, spec := range cfg.ChainSpecs() {
		if got := ruleLine("QTABLES-FORWARD", spec); got != want[i] {
			t.Errorf("ChainSpecs()[%d] = %q, want %q", i, got, want[i])
		}
	}
	if got := save("filter"); strings.Count(got, "-j QTABLES-FORWARD") != 1 ||
		!strings.Contains(got, strings.Join(want, "\n")+"\n") || strings.Contains(got, "balance") {
		t.Errorf("filter after re-install:\n%s", got)
	}
	st, err := Status(ipt)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Hook != matchers.HookForward || st[0].Jumps != 1 || !st[0].First ||
		!slices.Equal(st[0].Rules, want) {
		t.Errorf("Status = %+v", st)
	}
	if err := Remove(ipt, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := save("filter"), "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-A FORWARD -s 10.9.9.9/32 -j DROP\n"; got != want {
		t.Errorf("filter after remove:\n%s\nwant:\n%s", got, want)
	}
	if got := save("mangle"); strings.Contains(got, "QTABLES") {
		t.Errorf("mangle after remove:\n%s", got)
	}
}

// nsIPTables returns go-iptables acting on ns through a wrapper script.
func nsIPTables(t *testing.T, ns *netns.Namespace) IPTables {
	t.Helper()
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	iptPath, err := exec.LookPath("iptables")
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(t.TempDir(), "iptables")
	script := fmt.Sprintf("#!/bin/sh\nexec %s netns exec %s %s \"$@\"\n", ipPath, ns.Name(), iptPath)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ipt, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Path(wrapper), iptables.Timeout(10))
	if err != nil {
		t.Fatal(err)
	}
	return ipt
}
