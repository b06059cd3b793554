package matchers

import "testing"

// rejectCases were checked against iptables-save / iptables -L[ -n] 1.8.9;
// the refused ones fail there too (tcp-reset without -p tcp, and REJECT
// outside filter, with "Invalid argument" from the kernel).
var rejectCases = []targetCase{
	{rule: ruleAny, args: "", save: " --reject-with icmp-port-unreachable", listN: " reject-with icmp-port-unreachable"},
	{rule: ruleAny, args: "--reject-with icmp-net-unreachable", save: " --reject-with icmp-net-unreachable", listN: " reject-with icmp-net-unreachable"},
	{rule: ruleAny, args: "--reject-with host-unreach", save: " --reject-with icmp-host-unreachable", listN: " reject-with icmp-host-unreachable"},
	{rule: ruleAny, args: "--reject-with icmp-proto-unreachable", save: " --reject-with icmp-proto-unreachable", listN: " reject-with icmp-proto-unreachable"},
	{rule: ruleAny, args: "--reject-with port-unreach", save: " --reject-with icmp-port-unreachable", listN: " reject-with icmp-port-unreachable"},
	{rule: ruleAny, args: "--reject-with icmp-net-prohibited", save: " --reject-with icmp-net-prohibited", listN: " reject-with icmp-net-prohibited"},
	{rule: ruleAny, args: "--reject-with icmp-host-prohibited", save: " --reject-with icmp-host-prohibited", listN: " reject-with icmp-host-prohibited"},
	{rule: ruleTCP, args: "--reject-with tcp-reset", save: " --reject-with tcp-reset", listN: " reject-with tcp-reset"},
	{rule: ruleTCP, args: "--reject-with tcp-rst", save: " --reject-with tcp-reset", listN: " reject-with tcp-reset"},
	{rule: ruleTCP, args: "--reject-with tcp-r", save: " --reject-with tcp-reset", listN: " reject-with tcp-reset"},
	{rule: ruleAny, args: "--reject-with icmp-admin-prohibited", save: " --reject-with icmp-admin-prohibited", listN: " reject-with icmp-admin-prohibited"},
	{rule: ruleAny, args: "--reject-with admin-prohib", save: " --reject-with icmp-admin-prohibited", listN: " reject-with icmp-admin-prohibited"},
	// Prefixes, case-insensitive, first table entry wins.
	{rule: ruleAny, args: "--reject-with ICMP-h", save: " --reject-with icmp-host-unreachable", listN: " reject-with icmp-host-unreachable"},
	{rule: ruleAny, args: "--reject-with icmp", save: " --reject-with icmp-net-unreachable", listN: " reject-with icmp-net-unreachable"},
	{rule: ruleAny, args: "--reject-with h", save: " --reject-with icmp-host-unreachable", listN: " reject-with icmp-host-unreachable"},
	{rule: ruleAny, args: "--reject-with p", save: " --reject-with icmp-proto-unreachable", listN: " reject-with icmp-proto-unreachable"},
	{rule: ruleAny, args: "--reject-with icmp-p", save: " --reject-with icmp-proto-unreachable", listN: " reject-with icmp-proto-unreachable"},
	{rule: ruleAny, args: "--reject-with icmp-host-p", save: " --reject-with icmp-host-prohibited", listN: " reject-with icmp-host-prohibited"},
	{rule: ruleAny, args: "--reject-with net-pro", save: " --reject-with icmp-net-prohibited", listN: " reject-with icmp-net-prohibited"},
	{rule: ruleAny, args: "--reject-with ADMIN", save: " --reject-with icmp-admin-prohibited", listN: " reject-with icmp-admin-prohibited"},
	{rule: ruleAny, args: `--reject-with ""`, save: " --reject-with icmp-net-unreachable", listN: " reject-with icmp-net-unreachable"},
	{rule: Rule{Table: "filter", Chain: "foo"}, args: "", save: " --reject-with icmp-port-unreachable", listN: " reject-with icmp-port-unreachable"},
	// Refused.
	{rule: ruleAny, args: "--reject-with echo"},
	{rule: ruleAny, args: "--reject-with echo-reply"},
	{rule: ruleAny, args: "--reject-with e"},
	{rule: ruleAny, args: "--reject-with tcp-resetx"},
	{rule: ruleAny, args: "--reject-with TCP-RESET"},
	{rule: ruleAny, args: "--reject-with tcp-reset"},
	{rule: Rule{Table: "filter", Proto: 6, InvProto: true}, args: "--reject-with tcp-reset"},
	{rule: Rule{Table: "filter", Proto: 17}, args: "--reject-with tcp-reset"},
	{rule: ruleAny, args: "--reject-with icmp-port-unreachable --reject-with tcp-reset"},
	{rule: ruleTCP, args: "! --reject-with tcp-reset"},
	{rule: Rule{Table: "mangle", Chain: "INPUT"}, args: ""},
	{rule: Rule{Table: "raw", Chain: "PREROUTING"}, args: ""},
	{rule: Rule{Table: "nat", Chain: "nfoo"}, args: ""},
}

func TestREJECTSaveList(t *testing.T) { runTargetCases(t, "REJECT", rejectCases) }

func TestREJECTRegistration(t *testing.T) {
	ext, ok := LookupTarget("REJECT")
	if !ok {
		t.Fatal("REJECT not registered")
	}
	if len(ext.Tables) != 1 || ext.Tables[0] != "filter" {
		t.Errorf("Tables = %v, want [filter]", ext.Tables)
	}
	for h := HookPrerouting; h <= HookPostrouting; h++ {
		want := h == HookInput || h == HookForward || h == HookOutput
		if ext.Hooks.Has(h) != want {
			t.Errorf("Hooks.Has(%v) = %v, want %v", h, !want, want)
		}
	}
}

func TestREJECTApply(t *testing.T) {
	for _, tc := range []struct {
		rule Rule
		args []string
		want RejectType
	}{
		{ruleAny, nil, RejectPortUnreachable},
		{ruleTCP, []string{"--reject-with", "tcp-reset"}, RejectTCPReset},
		{ruleAny, []string{"--reject-with", "icmp-admin-prohibited"}, RejectAdminProhibited},
	} {
		tg, err := buildTarget("REJECT", tc.rule, tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		c := &Context{Mark: 7}
		if v := tg.Apply(c); v != Drop {
			t.Errorf("%v: verdict %v, want DROP", tc.args, v)
		}
		if len(c.Events) != 1 || c.Events[0].Kind != EventReject || c.Events[0].Reject != tc.want {
			t.Errorf("%v: events %+v, want one EventReject %v", tc.args, c.Events, tc.want)
		}
		if c.Mark != 7 {
			t.Errorf("mark changed to %d", c.Mark)
		}
	}
}

// TestRejectTypeICMP checks the codes of spec §6.2 (RFC 792/1812 values).
func TestRejectTypeICMP(t *testing.T) {
	want := map[RejectType]uint8{
		RejectNetUnreachable:   0,
		RejectHostUnreachable:  1,
		RejectProtoUnreachable: 2,
		RejectPortUnreachable:  3,
		RejectNetProhibited:    9,
		RejectHostProhibited:   10,
		RejectAdminProhibited:  13,
	}
	for rt, code := range want {
		typ, c, ok := rt.ICMP()
		if !ok || typ != 3 || c != code {
			t.Errorf("%v.ICMP() = %d, %d, %v; want 3, %d, true", rt, typ, c, ok, code)
		}
	}
	if _, _, ok := RejectTCPReset.ICMP(); ok {
		t.Error("tcp-reset has an ICMP type")
	}
	if _, _, ok := RejectType(200).ICMP(); ok {
		t.Error("RejectType(200) has an ICMP type")
	}
	if s := RejectTCPReset.String(); s != "tcp-reset" {
		t.Errorf("String = %q", s)
	}
}
