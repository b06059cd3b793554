package matchers

import "testing"

// connmarkTargetCases were checked against iptables-save / iptables
// -L[ -n] 1.8.9.
var connmarkTargetCases = []targetCase{
	{args: "--set-mark 0x5", save: " --set-xmark 0x5/0xffffffff", listN: " CONNMARK set 0x5"},
	{args: "--set-mark 0x5/0xf", save: " --set-xmark 0x5/0xf", listN: " CONNMARK xset 0x5/0xf"},
	{args: "--set-xmark 0x5/0xf", save: " --set-xmark 0x5/0xf", listN: " CONNMARK xset 0x5/0xf"},
	{args: "--set-xmark 0x5", save: " --set-xmark 0x5/0xffffffff", listN: " CONNMARK set 0x5"},
	{args: "--and-mark 0xf0", save: " --set-xmark 0x0/0xffffff0f", listN: " CONNMARK and 0xf0"},
	{args: "--or-mark 0xf0", save: " --set-xmark 0xf0/0xf0", listN: " CONNMARK or 0xf0"},
	{args: "--xor-mark 0xf0", save: " --set-xmark 0xf0/0x0", listN: " CONNMARK xor 0xf0"},
	{args: "--set-xmark 0/0", save: " --set-xmark 0x0/0x0", listN: " CONNMARK and 0xffffffff"},
	{args: "--set-xmark 0x1/0xffffffff", save: " --set-xmark 0x1/0xffffffff", listN: " CONNMARK set 0x1"},
	{args: "--set-xmark 0x0/0xfffffffe", save: " --set-xmark 0x0/0xfffffffe", listN: " CONNMARK and 0x1"},
	{args: "--save-mark", save: " --save-mark --nfmask 0xffffffff --ctmask 0xffffffff", listN: " CONNMARK save"},
	{args: "--save-mark --mask 0xff", save: " --save-mark --nfmask 0xff --ctmask 0xff", listN: " CONNMARK save mask 0xff"},
	{args: "--save-mark --nfmask 0xff", save: " --save-mark --nfmask 0xff --ctmask 0xffffffff", listN: " CONNMARK save nfmask 0xff ctmask ~0xffffffff"},
	{args: "--save-mark --ctmask 0xff", save: " --save-mark --nfmask 0xffffffff --ctmask 0xff", listN: " CONNMARK save nfmask 0xffffffff ctmask ~0xff"},
	{args: "--save-mark --nfmask 0xf --ctmask 0xf0", save: " --save-mark --nfmask 0xf --ctmask 0xf0", listN: " CONNMARK save nfmask 0xf ctmask ~0xf0"},
	{args: "--restore-mark", save: " --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff", listN: " CONNMARK restore"},
	{args: "--restore-mark --mask 0xff", save: " --restore-mark --nfmask 0xff --ctmask 0xff", listN: " CONNMARK restore mask 0xff"},
	{args: "--restore-mark --nfmask 0xf --ctmask 0xf0", save: " --restore-mark --nfmask 0xf --ctmask 0xf0", listN: " CONNMARK restore ctmask 0xf0 nfmask ~0xf"},
	{args: "--restore-mark --ctmask 0xf0", save: " --restore-mark --nfmask 0xffffffff --ctmask 0xf0", listN: " CONNMARK restore ctmask 0xf0 nfmask ~0xffffffff"},
	{args: "--ctmask 0xf --nfmask 0xf0 --restore-mark", save: " --restore-mark --nfmask 0xf0 --ctmask 0xf", listN: " CONNMARK restore ctmask 0xf nfmask ~0xf0"},
	// The masks are written into the one structure in the order given.
	{args: "--set-mark 1 --mask 0xff", save: " --set-xmark 0x1/0xff", listN: " CONNMARK xset 0x1/0xff"},
	{args: "--set-mark 1 --ctmask 0xff", save: " --set-xmark 0x1/0xff", listN: " CONNMARK xset 0x1/0xff"},
	{args: "--ctmask 0xff --set-mark 1", save: " --set-xmark 0x1/0xffffffff", listN: " CONNMARK set 0x1"},
	{args: "--set-mark 1 --nfmask 0xff", save: " --set-xmark 0x1/0xffffffff", listN: " CONNMARK set 0x1"},
	{args: "--and-mark 1 --mask 0xff", save: " --set-xmark 0x0/0xff", listN: " CONNMARK and 0xffffff00"},
	{args: "--mask 0xff --and-mark 1", save: " --set-xmark 0x0/0xfffffffe", listN: " CONNMARK and 0x1"},
	{args: "--set-xmark 5/7 --mask 0xff", save: " --set-xmark 0x5/0xff", listN: " CONNMARK xset 0x5/0xff"},
	// Shifts (revision 2): the last one given wins; 0 is not printed.
	{args: "--save-mark --left-shift-mark 4", save: " --save-mark --nfmask 0xffffffff --ctmask 0xffffffff --left-shift-mark 4", listN: " CONNMARK save left-shift-mark 4"},
	{args: "--restore-mark --right-shift-mark 4 --mask 0xff", save: " --restore-mark --nfmask 0xff --ctmask 0xff --right-shift-mark 4", listN: " CONNMARK restore mask 0xff right-shift-mark 4"},
	{args: "--set-mark 0x10 --right-shift-mark 4", save: " --set-xmark 0x10/0xffffffff --right-shift-mark 4", listN: " CONNMARK set 0x10 right-shift-mark 4"},
	{args: "--save-mark --left-shift-mark 0", save: " --save-mark --nfmask 0xffffffff --ctmask 0xffffffff", listN: " CONNMARK save"},
	{args: "--save-mark --left-shift-mark 4 --right-shift-mark 2", save: " --save-mark --nfmask 0xffffffff --ctmask 0xffffffff --right-shift-mark 2", listN: " CONNMARK save right-shift-mark 2"},
	{args: "--right-shift-mark 2 --left-shift-mark 4 --save-mark", save: " --save-mark --nfmask 0xffffffff --ctmask 0xffffffff --left-shift-mark 4", listN: " CONNMARK save left-shift-mark 4"},
	{args: "--save-mark --left-shift-mark 31", save: " --save-mark --nfmask 0xffffffff --ctmask 0xffffffff --left-shift-mark 31", listN: " CONNMARK save left-shift-mark 31"},
	{args: "--or-mark 0xf0 --left-shift-mark 1", save: " --set-xmark 0xf0/0xf0 --left-shift-mark 1", listN: " CONNMARK or 0xf0 left-shift-mark 1"},
	{rule: Rule{Table: "mangle", Chain: "PREROUTING"}, args: "--set-mark 1", save: " --set-xmark 0x1/0xffffffff", listN: " CONNMARK set 0x1"},
	// Refused (iptables, or the kernel when the rule is loaded).
	{args: ""},
	{args: "--mask 0xff"},
	{args: "--set-mark 1 --save-mark"},
	{args: "--set-mark 1 --set-mark 2"},
	{args: "--save-mark --mask 0xff --nfmask 0xf"},
	{args: "--nfmask 0xf0 --save-mark --mask 0xff"},
	{args: "--mask 0xf0 --restore-mark --ctmask 0xff"},
	{args: "--save-mark --nfmask 0xf --nfmask 0xf"},
	{args: "--save-mark --left-shift-mark 32"},
	{args: "--save-mark --left-shift-mark 33"},
	{args: "--set-mark 0x10 --left-shift-mark 32"},
	{args: "--set-mark 4294967296"},
	{args: "--and-mark 1/2"},
	{args: "! --set-mark 1"},
}

func TestCONNMARKSaveList(t *testing.T) { runTargetCases(t, "CONNMARK", connmarkTargetCases) }
