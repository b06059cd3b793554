package engine

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/qtables/qtables/matchers"
)

// CommandKind is the iptables command of a command line.
type CommandKind uint8

const (
	CmdNone        CommandKind = iota
	CmdAppend                  // -A
	CmdInsert                  // -I
	CmdDelete                  // -D
	CmdReplace                 // -R
	CmdCheck                   // -C
	CmdNewChain                // -N
	CmdRenameChain             // -E
	CmdFlush                   // -F
	CmdDeleteChain             // -X
	CmdPolicy                  // -P
	CmdZero                    // -Z
	CmdList                    // -L
	CmdListRules               // -S
)

// takesRule reports whether the command carries a rule specification.
func (k CommandKind) takesRule() bool {
	switch k {
	case CmdAppend, CmdInsert, CmdDelete, CmdReplace, CmdCheck:
		return true
	}
	return false
}

var commandLetters = map[CommandKind]string{
	CmdAppend: "A", CmdInsert: "I", CmdDelete: "D", CmdReplace: "R", CmdCheck: "C",
	CmdNewChain: "N", CmdRenameChain: "E", CmdFlush: "F", CmdDeleteChain: "X",
	CmdPolicy: "P", CmdZero: "Z", CmdList: "L", CmdListRules: "S",
}

// Command is one parsed iptables command line.
type Command struct {
	Kind  CommandKind
	Table string // "filter" unless -t
	// Chain is the command's chain argument ("" where optional and absent).
	Chain string
	// NewName is -E's new name; Policy is -P's target.
	NewName string
	Policy  string
	// RuleNum is the rule number argument of -I, -D, -R, -Z, -L, -S (0: none).
	RuleNum int
	// Rules are the rule specification, one rule per combination of the
	// -s and -d lists, in iptables' order. Empty when the command has none.
	Rules []*Rule
	// Counters from -c, applied to new rules.
	SetCounters bool
	Pkts, Bytes uint64
	Numeric     bool // -n
	Verbose     bool // -v
	Exact       bool // -x
	LineNumbers bool // --line-numbers
	// Zero is set for "-L -Z" and "-S -Z": list, then zero the counters.
	Zero       bool
	hasRuleNum bool
	cmdTok     token // the command option, for errors
	chainTok   token
	ruleNumTok token
	targetTok  token
	specTokens int // how many rule-spec options were given
	ruleParams *ruleParams
}

// coreOpt describes one of iptables' own options.
type coreOpt struct {
	long   string
	short  byte
	args   int // 0 or 1; commands handle their own operands
	invert bool
	cmd    CommandKind
}

var coreOpts = []coreOpt{
	{long: "append", short: 'A', cmd: CmdAppend},
	{long: "check", short: 'C', cmd: CmdCheck},
	{long: "delete", short: 'D', cmd: CmdDelete},
	{long: "replace", short: 'R', cmd: CmdReplace},
	{long: "insert", short: 'I', cmd: CmdInsert},
	{long: "new-chain", short: 'N', cmd: CmdNewChain},
	{long: "rename-chain", short: 'E', cmd: CmdRenameChain},
	{long: "flush", short: 'F', cmd: CmdFlush},
	{long: "delete-chain", short: 'X', cmd: CmdDeleteChain},
	{long: "policy", short: 'P', cmd: CmdPolicy},
	{long: "zero", short: 'Z', cmd: CmdZero},
	{long: "list", short: 'L', cmd: CmdList},
	{long: "list-rules", short: 'S', cmd: CmdListRules},
	{long: "table", short: 't', args: 1},
	{long: "source", short: 's', args: 1, invert: true},
	{long: "src", short: 's', args: 1, invert: true},
	{long: "destination", short: 'd', args: 1, invert: true},
	{long: "dst", short: 'd', args: 1, invert: true},
	{long: "protocol", short: 'p', args: 1, invert: true},
	{long: "in-interface", short: 'i', args: 1, invert: true},
	{long: "out-interface", short: 'o', args: 1, invert: true},
	{long: "fragment", short: 'f', invert: true},
	{long: "jump", short: 'j', args: 1},
	{long: "goto", short: 'g', args: 1},
	{long: "match", short: 'm', args: 1},
	{long: "set-counters", short: 'c', args: 1},
	{long: "numeric", short: 'n'},
	{long: "verbose", short: 'v'},
	{long: "exact", short: 'x'},
	{long: "line-numbers", short: '0'},
	{long: "wait", short: 'w'},
	{long: "wait-interval", short: 'W', args: 1},
}

func coreByShort(c byte) (*coreOpt, bool) {
	for i := range coreOpts {
		if coreOpts[i].short == c && c != '0' {
			return &coreOpts[i], true
		}
	}
	return nil, false
}

// ruleParams accumulates the rule specification while parsing.
type ruleParams struct {
	srcs, dsts     []Addr
	srcTok, dstTok token
	invSrc, invDst bool
	in, out        Iface
	inTok, outTok  token
	hasIn, hasOut  bool
	proto          uint8
	protoName      string
	invProto       bool
	hasProto       bool
	protoTok       token
	protoUsed      bool
	frag           FragMode
	matches        []*extInstance
	target         *extInstance // extension target
	targetName     string
	targetKind     TargetKind
	targetVerdict  matchers.Verdict
	hasTarget      bool
	seen           map[byte]bool
}

// extInstance is a loaded match or target with its builder.
type extInstance struct {
	name    string
	tok     token
	opts    []matchers.Option
	mb      matchers.MatchBuilder
	tb      matchers.TargetBuilder
	seen    map[string]bool
	isMatch bool
}

// parseCommand parses one iptables command line (without the program
// name). defTable is the table when -t is absent; inTable reports that the
// line comes from a rules file's table block, where -t is not allowed.
func parseCommand(toks []token, defTable string, inTable bool) (*Command, error) {
	cmd := &Command{Table: defTable}
	optToks := map[byte]token{} // first use of each core option, by letter
	rp := &ruleParams{seen: map[byte]bool{}}
	cmd.ruleParams = rp
	var loaded []*extInstance // matches and target in load order
	invert := false
	var invTok token
	tableSet := false

	next := 0
	// operand returns the next token if it is a non-option word.
	operand := func() (token, bool) {
		if next < len(toks) && toks[next].text != "" && toks[next].text[0] != '-' && toks[next].text[0] != '!' {
			next++
			return toks[next-1], true
		}
		return token{}, false
	}
	setCommand := func(k CommandKind, t token) error {
		// iptables runs "-L -Z" (and "-S -Z") as list, then zero.
		switch {
		case (cmd.Kind == CmdList || cmd.Kind == CmdListRules) && k == CmdZero && !cmd.Zero:
			cmd.Zero = true
			return nil
		case cmd.Kind == CmdZero && (k == CmdList || k == CmdListRules) && !cmd.Zero:
			cmd.Kind, cmd.cmdTok, cmd.Zero = k, t, true
			return nil
		}
		if cmd.Kind != CmdNone {
			return errAt(t, "cannot use -%s with -%s", commandLetters[k], commandLetters[cmd.Kind])
		}
		cmd.Kind, cmd.cmdTok = k, t
		return nil
	}
	needChain := func(t token) error {
		c, ok := operand()
		if !ok {
			return errAt(t, "option %q requires a chain name", t.text)
		}
		cmd.Chain, cmd.chainTok = c.text, c
		return nil
	}
	optChain := func() {
		if c, ok := operand(); ok {
			cmd.Chain, cmd.chainTok = c.text, c
		}
	}
	optNum := func(required bool, t token) error {
		n, ok := operand()
		if !ok {
			if required {
				return errAt(t, "option %q requires a rule number", t.text)
			}
			return nil
		}
		v, err := strconv.Atoi(n.text)
		if err != nil || v < 1 {
			return errAt(n, "invalid rule number %q", n.text)
		}
		cmd.RuleNum, cmd.hasRuleNum, cmd.ruleNumTok = v, true, n
		return nil
	}

	// handleCore applies core option o with argument arg (from token at).
	handleCore := func(o *coreOpt, t token, arg token) error {
		inv := invert
		invert = false
		if inv && !o.invert {
			return errAt(invTok, "cannot have ! before -%c", o.short)
		}
		if o.cmd != CmdNone {
			if err := setCommand(o.cmd, t); err != nil {
				return err
			}
			switch o.cmd {
			case CmdAppend, CmdCheck, CmdNewChain:
				return needChain(t)
			case CmdDelete:
				if err := needChain(t); err != nil {
					return err
				}
				return optNum(false, t)
			case CmdReplace:
				if err := needChain(t); err != nil {
					return err
				}
				return optNum(true, t)
			case CmdInsert:
				if err := needChain(t); err != nil {
					return err
				}
				return optNum(false, t)
			case CmdRenameChain:
				if err := needChain(t); err != nil {
					return err
				}
				n, ok := operand()
				if !ok {
					return errAt(t, "-E requires old-chain-name and new-chain-name")
				}
				cmd.NewName = n.text
				if err := validChainName(n.text); err != nil {
					return errAt(n, "%v", err)
				}
				return nil
			case CmdFlush, CmdDeleteChain:
				optChain()
				return nil
			case CmdPolicy:
				if err := needChain(t); err != nil {
					return err
				}
				p, ok := operand()
				if !ok {
					return errAt(t, "-P requires a chain and a policy")
				}
				cmd.Policy = p.text
				cmd.targetTok = p
				return nil
			case CmdZero, CmdList, CmdListRules:
				optChain()
				if cmd.Chain != "" {
					return optNum(false, t)
				}
				return nil
			}
		}
		if _, dup := optToks[o.short]; !dup {
			optToks[o.short] = t
		}
		isSpec := strings.IndexByte("sdpiofjgmc", o.short) >= 0
		if isSpec {
			cmd.specTokens++
			if o.short != 'm' && rp.seen[o.short] {
				return errAt(t, "multiple -%c flags not allowed", o.short)
			}
			rp.seen[o.short] = true
		}
		switch o.short {
		case 't':
			if inTable {
				return errAt(t, "the -t option cannot be used in a rules file table block")
			}
			if tableSet {
				return errAt(t, "the -t option cannot be used twice")
			}
			tableSet = true
			cmd.Table = arg.text
		case 's', 'd':
			addrs, err := parseAddrList(arg.text)
			if err != nil {
				return errAt(arg, "%v", err)
			}
			if o.short == 's' {
				rp.srcs, rp.invSrc, rp.srcTok = addrs, inv, arg
			} else {
				rp.dsts, rp.invDst, rp.dstTok = addrs, inv, arg
			}
		case 'p':
			p, err := parseProto(arg.text)
			if err != nil {
				return errAt(arg, "%v", err)
			}
			if p == 0 && inv {
				return errAt(arg, "rule would never match protocol")
			}
			rp.proto, rp.invProto, rp.hasProto, rp.protoTok = p, inv, true, arg
			rp.protoName = strings.ToLower(arg.text)
		case 'i', 'o':
			ifc, err := parseIface(arg.text)
			if err != nil {
				return errAt(arg, "%v", err)
			}
			ifc.Inv = inv
			if o.short == 'i' {
				rp.in, rp.hasIn, rp.inTok = ifc, true, arg
			} else {
				rp.out, rp.hasOut, rp.outTok = ifc, true, arg
			}
		case 'f':
			if inv {
				rp.frag = FragNotFrag
			} else {
				rp.frag = FragNonFirst
			}
		case 'j', 'g':
			if rp.seen['j'] && o.short == 'g' || rp.seen['g'] && o.short == 'j' {
				return errAt(t, "cannot use -j with -g")
			}
			if err := rp.setTarget(o.short == 'g', arg, &loaded); err != nil {
				return err
			}
			cmd.targetTok = arg
		case 'm':
			ext, ok := matchers.LookupMatch(arg.text)
			if !ok {
				return errAt(arg, "match extension %q is not implemented by qtables", arg.text)
			}
			inst := &extInstance{name: ext.Name, tok: arg, opts: ext.Options, mb: ext.New(), seen: map[string]bool{}, isMatch: true}
			rp.matches = append(rp.matches, inst)
			loaded = append(loaded, inst)
		case 'c':
			p, b, err := parseCounterArgs(arg, operand)
			if err != nil {
				return err
			}
			cmd.SetCounters, cmd.Pkts, cmd.Bytes = true, p, b
		case 'n':
			cmd.Numeric = true
		case 'v':
			cmd.Verbose = true
		case 'x':
			cmd.Exact = true
		case '0':
			cmd.LineNumbers = true
		case 'w':
			operand() // optional seconds: the xtables lock does not apply to files
		case 'W':
		}
		return nil
	}

	// handleExt offers a long option to loaded extensions, newest first.
	handleExt := func(name string, t token, inlineArg *token) (bool, error) {
		for i := len(loaded) - 1; i >= 0; i-- {
			inst := loaded[i]
			o, ok := matchers.FindOption(inst.opts, name)
			if !ok {
				continue
			}
			inv := invert
			invert = false
			if inv && !o.Invert {
				return true, errAt(t, "%s: option \"--%s\" cannot be inverted", inst.name, o.Name)
			}
			if inst.seen[o.Name] && !o.Repeat {
				return true, errAt(t, "%s: only one \"--%s\" allowed", inst.name, o.Name)
			}
			inst.seen[o.Name] = true
			var args []string
			argTok := t
			for k := 0; k < o.Args; k++ {
				if k == 0 && inlineArg != nil {
					args = append(args, inlineArg.text)
					argTok = *inlineArg
					continue
				}
				if next >= len(toks) {
					return true, errAt(t, "option \"--%s\" requires an argument", o.Name)
				}
				if k > 0 && (strings.HasPrefix(toks[next].text, "-") || strings.HasPrefix(toks[next].text, "!")) {
					return true, errAt(toks[next], "option \"--%s\" requires %d arguments", o.Name, o.Args)
				}
				if k == 0 {
					argTok = toks[next]
				}
				args = append(args, toks[next].text)
				next++
			}
			if o.Args == 0 && inlineArg != nil {
				return true, errAt(*inlineArg, "option \"--%s\" doesn't allow an argument", o.Name)
			}
			var err error
			if inst.isMatch {
				err = inst.mb.Parse(o.Name, args, inv)
			} else {
				err = inst.tb.Parse(o.Name, args, inv)
			}
			if err != nil {
				return true, errAt(argTok, "%s: %v", inst.name, err)
			}
			return true, nil
		}
		return false, nil
	}

	for next < len(toks) {
		t := toks[next]
		next++
		s := t.text
		switch {
		case s == "!":
			if invert {
				return nil, errAt(t, "multiple consecutive ! not allowed")
			}
			if next >= len(toks) {
				return nil, errAt(t, "nothing appropriate following !")
			}
			invert, invTok = true, t
		case strings.HasPrefix(s, "--") && len(s) > 2:
			name, val, hasVal := strings.Cut(s[2:], "=")
			var inline *token
			if hasVal {
				inline = &token{val, Pos{t.pos.File, t.pos.Line, t.pos.Col + 3 + len(name)}}
			}
			if name == "match" || name == "jump" || name == "goto" {
				if invert && name == "match" {
					return nil, errAt(invTok, "unexpected ! flag before --match")
				}
			}
			if ok, err := handleExt(name, t, inline); ok || err != nil {
				if err != nil {
					return nil, err
				}
				continue
			}
			o, err := findCoreLong(name, t)
			if err != nil {
				// Implicit protocol match: "-p tcp --dport 22" loads tcp.
				if rp.hasProto && !rp.protoUsed {
					if ext, ok := matchers.LookupMatch(protoMatchName(rp)); ok {
						rp.protoUsed = true
						inst := &extInstance{name: ext.Name, tok: t, opts: ext.Options, mb: ext.New(), seen: map[string]bool{}, isMatch: true}
						rp.matches = append(rp.matches, inst)
						loaded = append(loaded, inst)
						if ok, err := handleExt(name, t, inline); ok || err != nil {
							if err != nil {
								return nil, err
							}
							continue
						}
					}
				}
				return nil, err
			}
			if o.short == 'm' && invert {
				return nil, errAt(invTok, "unexpected ! flag before --match")
			}
			var arg token
			if o.args == 1 {
				if inline != nil {
					arg = *inline
				} else {
					if next >= len(toks) {
						return nil, errAt(t, "option %q requires an argument", s)
					}
					arg = toks[next]
					next++
				}
			} else if inline != nil {
				return nil, errAt(*inline, "option %q doesn't allow an argument", "--"+name)
			}
			if err := handleCore(o, t, arg); err != nil {
				return nil, err
			}
		case strings.HasPrefix(s, "-") && len(s) > 1 && s != "--":
			// One or more bundled short options: -nvL, -jACCEPT.
			for k := 1; k < len(s); k++ {
				o, ok := coreByShort(s[k])
				if !ok {
					return nil, errAt(t, "unknown option \"-%c\"", s[k])
				}
				if o.short == 'm' && invert {
					return nil, errAt(invTok, "unexpected ! flag before --match")
				}
				var arg token
				if o.args == 1 {
					if k+1 < len(s) {
						arg = token{s[k+1:], Pos{t.pos.File, t.pos.Line, t.pos.Col + k + 1}}
					} else {
						if next >= len(toks) {
							return nil, errAt(t, "option \"-%c\" requires an argument", o.short)
						}
						arg = toks[next]
						next++
					}
					k = len(s)
				}
				if err := handleCore(o, t, arg); err != nil {
					return nil, err
				}
			}
		default:
			return nil, errAt(t, "bad argument %q", s)
		}
	}
	if invert {
		return nil, errAt(invTok, "nothing appropriate following !")
	}
	if cmd.Kind == CmdNone {
		if len(toks) == 0 {
			return nil, &Error{Msg: "no command specified"}
		}
		return nil, errAt(toks[0], "no command specified")
	}
	if err := checkOptionsAllowed(cmd, optToks); err != nil {
		return nil, err
	}
	if cmd.Kind == CmdDelete && cmd.hasRuleNum && cmd.specTokens > 0 {
		return nil, errAt(cmd.ruleNumTok, "cannot give both a rule number and a rule specification to -D")
	}
	if cmd.Kind == CmdInsert && cmd.RuleNum == 0 {
		cmd.RuleNum = 1
	}
	if cmd.Kind.takesRule() && !(cmd.Kind == CmdDelete && cmd.hasRuleNum) {
		rules, err := buildRules(cmd, rp)
		if err != nil {
			return nil, err
		}
		cmd.Rules = rules
	}
	return cmd, nil
}

// checkOptionsAllowed applies iptables' command/option table
// (commands_v_options in xshared.c): -n, -x and --line-numbers go only
// with -L; -c only with -A, -I, -R and -P; the rule specification only with
// -A, -I, -D, -R and -C; -v with anything.
func checkOptionsAllowed(cmd *Command, used map[byte]token) error {
	for _, letter := range []byte("nx0csdpiofjgm") {
		t, ok := used[letter]
		if !ok {
			continue
		}
		allowed := false
		switch letter {
		case 'n', 'x', '0':
			allowed = cmd.Kind == CmdList
		case 'c':
			switch cmd.Kind {
			case CmdAppend, CmdInsert, CmdReplace, CmdPolicy:
				allowed = true
			}
		default:
			allowed = cmd.Kind.takesRule()
		}
		if !allowed {
			return errAt(t, "illegal option %q with this command (-%s)", t.text, commandLetters[cmd.Kind])
		}
	}
	return nil
}

func findCoreLong(name string, t token) (*coreOpt, error) {
	var found *coreOpt
	for i := range coreOpts {
		o := &coreOpts[i]
		if o.long == name {
			return o, nil
		}
		if strings.HasPrefix(o.long, name) {
			if found != nil && found.short != o.short {
				return nil, errAt(t, "option \"--%s\" is ambiguous", name)
			}
			found = o
		}
	}
	if found == nil {
		return nil, errAt(t, "unknown option %q", t.text)
	}
	return found, nil
}

// protoMatchName is the match implicitly loaded for the rule's protocol.
func protoMatchName(rp *ruleParams) string {
	if n, ok := protoNames[rp.proto]; ok {
		return n
	}
	return rp.protoName
}

func parseCounterArgs(arg token, operand func() (token, bool)) (uint64, uint64, error) {
	ps, bs, comma := strings.Cut(arg.text, ",")
	if !comma {
		b, ok := operand()
		if !ok {
			return 0, 0, errAt(arg, "-c requires packet and byte counter")
		}
		bs = b.text
	}
	p, err1 := strconv.ParseUint(ps, 10, 64)
	b, err2 := strconv.ParseUint(bs, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, errAt(arg, "-c packet and byte counters must be numeric")
	}
	return p, b, nil
}

func (rp *ruleParams) setTarget(isGoto bool, arg token, loaded *[]*extInstance) error {
	name := arg.text
	if len(name) > 28 {
		return errAt(arg, "invalid target name %q (28 chars max)", name)
	}
	rp.hasTarget, rp.targetName = true, name
	if isGoto {
		rp.targetKind = TargetGoto
		return nil
	}
	switch name {
	case "ACCEPT":
		rp.targetKind, rp.targetVerdict = TargetVerdict, matchers.Accept
		return nil
	case "DROP":
		rp.targetKind, rp.targetVerdict = TargetVerdict, matchers.Drop
		return nil
	case "QUEUE":
		rp.targetKind, rp.targetVerdict = TargetVerdict, matchers.QueueVerdict(0, false)
		return nil
	case "RETURN":
		rp.targetKind = TargetReturn
		return nil
	}
	if ext, ok := matchers.LookupTarget(name); ok {
		inst := &extInstance{name: ext.Name, tok: arg, opts: ext.Options, tb: ext.New(), seen: map[string]bool{}}
		rp.target = inst
		rp.targetKind = TargetExt
		*loaded = append(*loaded, inst)
		return nil
	}
	if iptablesTargets[name] {
		return errAt(arg, "target extension %s is not implemented by qtables", name)
	}
	rp.targetKind = TargetJump // resolved against the table when applied
	return nil
}

// iptablesTargets are iptables' target extensions: a name from this list is
// never a chain (iptables refuses such chain names), so a rule using one
// that qtables lacks is refused by name rather than as a missing chain.
var iptablesTargets = map[string]bool{
	"AUDIT": true, "CHECKSUM": true, "CLASSIFY": true, "CLUSTERIP": true, "CONNMARK": true,
	"CONNSECMARK": true, "CT": true, "DNAT": true, "DNPT": true, "DSCP": true, "ECN": true,
	"HL": true, "HMARK": true, "IDLETIMER": true, "LED": true, "LOG": true, "MARK": true,
	"MASQUERADE": true, "NETMAP": true, "NFLOG": true, "NFQUEUE": true, "NOTRACK": true,
	"RATEEST": true, "REDIRECT": true, "REJECT": true, "SECMARK": true, "SET": true,
	"SNAT": true, "SNPT": true, "SYNPROXY": true, "TCPMSS": true, "TCPOPTSTRIP": true,
	"TEE": true, "TOS": true, "TPROXY": true, "TRACE": true, "TTL": true, "ULOG": true,
}

// buildRules builds the rule(s) of a command from its parameters.
func buildRules(cmd *Command, rp *ruleParams) ([]*Rule, error) {
	multi := len(rp.srcs) > 1 || len(rp.dsts) > 1
	if multi && (rp.invSrc || rp.invDst) {
		t := rp.srcTok
		if len(rp.dsts) > 1 {
			t = rp.dstTok
		}
		return nil, errAt(t, "! not allowed with multiple source or destination IP addresses")
	}
	chain := cmd.Chain
	if rp.hasOut && (chain == "PREROUTING" || chain == "INPUT") {
		return nil, errAt(rp.outTok, "can't use -o with %s", chain)
	}
	if rp.hasIn && (chain == "POSTROUTING" || chain == "OUTPUT") {
		return nil, errAt(rp.inTok, "can't use -i with %s", chain)
	}
	info := &matchers.Rule{Table: cmd.Table, Chain: chain, Proto: rp.proto, InvProto: rp.invProto}
	base := Rule{In: rp.in, Out: rp.out, Proto: rp.proto, InvProto: rp.invProto, Frag: rp.frag}
	if cmd.cmdTok.pos.File != "" {
		base.Source = cmd.cmdTok.pos
	}
	// Each expanded rule gets its own extension instances: builders are
	// built once per rule so that stateful matches (limit, ...) do not share.
	srcs, dsts := rp.srcs, rp.dsts
	if len(srcs) == 0 {
		srcs = []Addr{{}}
	}
	if len(dsts) == 0 {
		dsts = []Addr{{}}
	}
	var rules []*Rule
	for _, s := range srcs {
		for _, d := range dsts {
			r := &Rule{In: base.In, Out: base.Out, Proto: base.Proto, InvProto: base.InvProto, Frag: base.Frag, Source: base.Source}
			r.Src, r.Dst = s, d
			r.Src.Inv, r.Dst.Inv = rp.invSrc, rp.invDst
			for _, m := range rp.matches {
				mm, err := m.mb.Build(info)
				if err != nil {
					return nil, errAt(m.tok, "%s: %v", m.name, err)
				}
				if mm == nil {
					// The extension constrains nothing and, as
					// iptables-nft does, leaves no trace in the rule.
					continue
				}
				r.Matches = append(r.Matches, MatchInstance{Name: m.name, Match: mm})
			}
			r.Target = Target{Kind: rp.targetKind, Name: rp.targetName, Verdict: rp.targetVerdict}
			if !rp.hasTarget {
				r.Target = Target{}
			}
			if rp.target != nil {
				tt, err := rp.target.tb.Build(info)
				if err != nil {
					return nil, errAt(rp.target.tok, "%s: %v", rp.target.name, err)
				}
				r.Target.Ext = tt
			}
			if cmd.SetCounters {
				r.Counters.Set(cmd.Pkts, cmd.Bytes)
			}
			rules = append(rules, r)
		}
	}
	return rules, nil
}

// parseAddrList parses a comma list of addr[/mask].
func parseAddrList(s string) ([]Addr, error) {
	var out []Addr
	for _, part := range strings.Split(s, ",") {
		a, err := parseAddr(part)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func parseAddr(s string) (Addr, error) {
	as, ms, hasMask := strings.Cut(s, "/")
	mask := uint32(0xffffffff)
	if hasMask {
		if strings.Contains(ms, ".") {
			m, err := netip.ParseAddr(ms)
			if err != nil || !m.Is4() {
				return Addr{}, fmt.Errorf("invalid mask %q specified", ms)
			}
			b := m.As4()
			mask = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		} else {
			n, err := strconv.Atoi(ms)
			if err != nil || n < 0 || n > 32 || ms == "" || ms[0] == '+' {
				return Addr{}, fmt.Errorf("invalid mask %q specified", ms)
			}
			if n == 0 {
				mask = 0
			} else {
				mask = 0xffffffff << (32 - n)
			}
		}
	}
	a, err := parseIPv4(as)
	if err != nil {
		return Addr{}, err
	}
	return Addr{Addr: a & mask, Mask: mask}, nil
}

// parseIPv4 accepts dotted quads as inet_aton's strict form does in
// iptables (xtables_numeric_to_ipaddr): 1 to 4 parts, each 0..255.
func parseIPv4(s string) (uint32, error) {
	parts := strings.Split(s, ".")
	if s == "" || len(parts) > 4 {
		return 0, fmt.Errorf("host/network %q not found", s)
	}
	var b [4]uint32
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 8)
		if err != nil {
			return 0, fmt.Errorf("host/network %q not found", s)
		}
		b[i] = uint32(v)
	}
	return b[0]<<24 | b[1]<<16 | b[2]<<8 | b[3], nil
}

func parseIface(s string) (Iface, error) {
	if s == "" {
		return Iface{}, fmt.Errorf("empty interface name")
	}
	if len(s) > 15 {
		return Iface{}, fmt.Errorf("interface name %q must be shorter than 16 characters", s)
	}
	if strings.HasSuffix(s, "+") {
		return Iface{Name: s[:len(s)-1], Wild: true}, nil
	}
	return Iface{Name: s}, nil
}

// protoNames is iptables' built-in protocol list (xtables_chain_protos):
// the first name for a number is the one iptables-save prints.
var protoNames = map[uint8]string{
	6: "tcp", 132: "sctp", 17: "udp", 136: "udplite", 1: "icmp", 58: "ipv6-icmp",
	50: "esp", 51: "ah", 135: "mobility-header", 33: "dccp", 108: "ipcomp",
}

var protoByName = map[string]uint8{
	"tcp": 6, "sctp": 132, "udp": 17, "udplite": 136, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58,
	"esp": 50, "ah": 51, "mobility-header": 135, "ipv6-mh": 135, "mh": 135, "dccp": 33,
	"ipcomp": 108, "all": 0,
}

func parseProto(s string) (uint8, error) {
	s = strings.ToLower(s)
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		v, err := strconv.ParseUint(s, 10, 8)
		if err != nil {
			return 0, fmt.Errorf("invalid protocol %q specified", s)
		}
		return uint8(v), nil
	}
	if p, ok := protoByName[s]; ok {
		return p, nil
	}
	if p, ok := etcProtocol(s); ok {
		return p, nil
	}
	return 0, fmt.Errorf("unknown protocol %q specified", s)
}

var etcProtocols struct {
	once  sync.Once
	m     map[string]uint8
	byNum map[uint8]string // first name of each number, in file order
}

func etcProtocol(name string) (uint8, bool) {
	etcProtocols.once.Do(func() {
		etcProtocols.m = map[string]uint8{}
		etcProtocols.byNum = map[uint8]string{}
		f, err := os.Open("/etc/protocols")
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			fs := strings.Fields(line)
			if len(fs) < 2 {
				continue
			}
			v, err := strconv.ParseUint(fs[1], 10, 8)
			if err != nil {
				continue
			}
			for _, n := range append([]string{fs[0]}, fs[2:]...) {
				etcProtocols.m[strings.ToLower(n)] = uint8(v)
			}
			if _, seen := etcProtocols.byNum[uint8(v)]; !seen {
				etcProtocols.byNum[uint8(v)] = fs[0]
			}
		}
	})
	p, ok := etcProtocols.m[name]
	return p, ok
}

// etcProtocolName is getprotobynumber: the first /etc/protocols name.
func etcProtocolName(p uint8) (string, bool) {
	etcProtocol("") // load
	n, ok := etcProtocols.byNum[p]
	return n, ok
}
