package bench

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/packet"
)

// Generated builds the rule set of sp (entered at chain of table filter),
// its filters in evaluation order and traffic aimed at them.
func Generated(sp RuleSpec, chain string, tr TrafficSpec) (*engine.Ruleset, []Filter, []Packet, error) {
	text, fs, err := GenerateRules(sp, chain)
	if err != nil {
		return nil, nil, nil, err
	}
	rs, err := engine.Parse("generated "+sp.String(), strings.NewReader(text))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generated rule set does not load: %w", err)
	}
	return rs, fs, tr.Generate(fs), nil
}

// ClassBenchRules converts ClassBench filters to a rule set: the filters
// made Expressible, with actions set by mode (see SetActions), emitted by
// Emit with o. It returns the rule-set text, the filters in evaluation
// order (Orig is the ClassBench filter number) and the number of filters
// dropped because they can never match.
func ClassBenchRules(fs []Filter, mode string, o EmitOptions) (string, []Filter, int, error) {
	cp := append([]Filter(nil), fs...)
	if err := SetActions(cp, mode); err != nil {
		return "", nil, 0, err
	}
	ex, dropped := Expressible(cp)
	text, order, err := Emit(ex, o)
	return text, order, dropped, err
}

// ReadCapture reads every frame of a pcap or pcapng file (copies of the
// bytes, with link type and timestamp).
func ReadCapture(path string) ([]Frame, error) {
	cr, err := packet.OpenCapture(path)
	if err != nil {
		return nil, err
	}
	defer cr.Close()
	var out []Frame
	var v packet.View
	for {
		_, err := cr.Next(&v)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, Frame{Data: append([]byte(nil), cr.Data()...), LinkType: cr.LinkType(), Time: v.Timestamp})
	}
}

// SynthFrames returns the frames of the traffic of sp (see SynthSpec).
func SynthFrames(sp SynthSpec) ([]Frame, error) {
	var out []Frame
	err := sp.Generate(func(ts time.Time, frame []byte) error {
		out = append(out, Frame{Data: frame, LinkType: 1, Time: ts})
		return nil
	})
	return out, err
}
