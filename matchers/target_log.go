package matchers

import (
	"fmt"
	"strconv"
	"strings"
)

// LOG writes a line describing the packet to the kernel log and lets
// evaluation continue. Here the line is built by AppendLogLine into the
// Context's scratch space and handed on as an EventLog; a sink writes it.
func init() {
	RegisterTarget(&TargetExt{
		Name:    "LOG",
		Options: logOptions,
		New:     func() TargetBuilder { return &logTargetBuilder{level: LogLevelDefault} },
	})
}

var logOptions = []Option{
	{Name: "log-level", Args: 1},
	{Name: "log-prefix", Args: 1},
	{Name: "log-tcp-sequence"},
	{Name: "log-tcp-options"},
	{Name: "log-ip-options"},
	{Name: "log-uid"},
	{Name: "log-macdecode"},
}

// LogLevelDefault is the syslog level LOG uses without --log-level
// (warning); iptables-save omits --log-level when it is this value.
const LogLevelDefault = 4

// LogPrefixMax is the longest --log-prefix kept: the kernel's field is 30
// bytes including the terminating NUL, and iptables cuts longer prefixes
// without a word.
const LogPrefixMax = 29

// logFlagOptions are the flag options in the order iptables-save prints them.
var logFlagOptions = [...]struct {
	flag       uint8
	name, list string
}{
	{LogTCPSequence, "log-tcp-sequence", "tcp-sequence"},
	{LogTCPOptions, "log-tcp-options", "tcp-options"},
	{LogIPOptions, "log-ip-options", "ip-options"},
	{LogUID, "log-uid", "uid"},
	{LogMACDecode, "log-macdecode", "macdecode"},
}

// logLevelParseNames are the names --log-level accepts (case-sensitive),
// with their levels; "panic" and "error" are the deprecated syslog spellings.
var logLevelParseNames = [...]struct {
	name  string
	level uint8
}{
	{"emerg", 0}, {"panic", 0}, {"alert", 1}, {"crit", 2}, {"error", 3},
	{"warning", 4}, {"notice", 5}, {"info", 6}, {"debug", 7},
}

// logLevelListNames are the names `iptables -L` (without -n) prints; they
// are not all accepted as input ("err", "warn").
var logLevelListNames = [8]string{"emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"}

// LogTarget is a LOG target.
type LogTarget struct {
	// Level is the syslog level 0..7 the line is logged at.
	Level uint8
	// Flags is a set of Log* flags (LogTCPSequence, ...).
	Flags uint8
	// Prefix is printed at the start of the line, at most LogPrefixMax bytes.
	Prefix string
}

// Apply formats the kernel's log line into c's scratch space and records it
// as an EventLog. It allocates nothing once the scratch buffer and the event
// slice have grown to their working size.
func (t *LogTarget) Apply(c *Context) Verdict {
	start := len(c.scratch)
	c.scratch = AppendLogLine(c.scratch, c, t.Prefix, t.Flags)
	text := c.scratch[start:len(c.scratch):len(c.scratch)]
	c.Events = append(c.Events, Event{Kind: EventLog, Level: t.Level, Text: text})
	return Continue
}

// Save prints the options in iptables-save's order: the prefix (quoted as
// xtables_save_string does), the level if it is not the default, then the
// flags.
func (t *LogTarget) Save(b *strings.Builder) {
	if t.Prefix != "" {
		b.WriteString(" --log-prefix ")
		SaveString(b, t.Prefix)
	}
	if t.Level != LogLevelDefault {
		b.WriteString(" --log-level ")
		b.WriteString(strconv.Itoa(int(t.Level)))
	}
	for _, f := range logFlagOptions {
		if t.Flags&f.flag != 0 {
			b.WriteString(" --")
			b.WriteString(f.name)
		}
	}
}

// List prints what libxt_LOG prints: with -n " LOG flags F level L", else
// " LOG level NAME" and the flag words; then the raw prefix in quotes.
func (t *LogTarget) List(b *strings.Builder, numeric bool) {
	b.WriteString(" LOG")
	if numeric {
		b.WriteString(" flags ")
		b.WriteString(strconv.Itoa(int(t.Flags)))
		b.WriteString(" level ")
		b.WriteString(strconv.Itoa(int(t.Level)))
	} else {
		if int(t.Level) < len(logLevelListNames) {
			b.WriteString(" level ")
			b.WriteString(logLevelListNames[t.Level])
		} else {
			b.WriteString(" UNKNOWN level ")
			b.WriteString(strconv.Itoa(int(t.Level)))
		}
		for _, f := range logFlagOptions {
			if t.Flags&f.flag != 0 {
				b.WriteByte(' ')
				b.WriteString(f.list)
			}
		}
		if t.Flags&^logFlagMask != 0 {
			b.WriteString(" unknown-flags")
		}
	}
	if t.Prefix != "" {
		b.WriteString(" prefix \"")
		b.WriteString(t.Prefix)
		b.WriteByte('"')
	}
}

type logTargetBuilder struct {
	seen  uint16 // bit i: option i of the registration seen
	level uint8
	flags uint8
	pfx   string
}

func (lb *logTargetBuilder) Parse(name string, args []string, invert bool) error {
	if invert {
		return fmt.Errorf("option \"--%s\" %w", name, ErrInvert)
	}
	idx := -1
	for i := range logOptions {
		if logOptions[i].Name == name {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("unknown option \"--%s\"", name)
	}
	if lb.seen&(1<<idx) != 0 {
		return fmt.Errorf("option \"--%s\" can only be used once", name)
	}
	if len(args) != logOptions[idx].Args {
		return fmt.Errorf("option \"--%s\" takes %d argument(s)", name, logOptions[idx].Args)
	}
	switch name {
	case "log-level":
		lvl, err := ParseLogLevel(args[0])
		if err != nil {
			return err
		}
		lb.level = lvl
	case "log-prefix":
		p := args[0]
		if p == "" {
			return fmt.Errorf("--log-prefix: argument must have a minimum length of 1 characters")
		}
		// iptables checks the whole argument, also beyond the cut.
		if strings.IndexByte(p, '\n') >= 0 {
			return fmt.Errorf("newlines not allowed in --log-prefix")
		}
		if len(p) > LogPrefixMax {
			p = p[:LogPrefixMax]
		}
		lb.pfx = p
	default:
		for _, f := range logFlagOptions {
			if f.name == name {
				lb.flags |= f.flag
			}
		}
	}
	lb.seen |= 1 << idx
	return nil
}

func (lb *logTargetBuilder) Build(r *Rule) (Target, error) {
	return &LogTarget{Level: lb.level, Flags: lb.flags, Prefix: lb.pfx}, nil
}

// ParseLogLevel parses a --log-level argument: a number 0..7 in strtoul
// syntax (so "0x3", "07" and " 3" are accepted) or one of the names emerg,
// panic, alert, crit, error, warning, notice, info, debug (case-sensitive).
func ParseLogLevel(s string) (uint8, error) {
	if v, err := ParseUint(s, 7); err == nil {
		return uint8(v), nil
	}
	for _, n := range logLevelParseNames {
		if n.name == s {
			return n.level, nil
		}
	}
	return 0, fmt.Errorf("log level %q unknown", s)
}
