package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/qtables/qtables/bench"
	"github.com/qtables/qtables/packet"
)

func newSynthCmd() *cobra.Command {
	var spec, out string
	c := &cobra.Command{
		Use:   "synth --out CAPTURE [--spec SPEC]",
		Short: "Write a generated capture (deterministic mixed TCP/UDP/ICMP traffic)",
		Long: `synth writes Ethernet frames of generated conversations to a pcap file:
TCP connections (handshake, request, reply, FIN exchange), UDP
request/response pairs and ICMP echo exchanges between clients in
10.0.0.0/16 and servers in 192.0.2.0/24 and 198.51.100.0/24.

SPEC is comma-separated key=value pairs: flows=N, tcp=W, udp=W, icmp=W
(weights), tcp-ports=22:80:443, udp-ports=53:123, payload=N, seed=N,
start=RFC3339. The same spec always gives the same capture.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sp, err := bench.ParseSynth(spec)
			if err != nil {
				return err
			}
			w, err := packet.CreateCapture(out, 1) // LINKTYPE_ETHERNET
			if err != nil {
				return err
			}
			n := 0
			if err := sp.Generate(func(ts time.Time, frame []byte) error { n++; return w.WritePacket(ts, frame) }); err != nil {
				w.Close()
				return err
			}
			if err := w.Close(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %d packets of %d flows to %s\n", n, sp.Flows, out)
			return nil
		},
	}
	c.Flags().StringVar(&spec, "spec", "", "traffic spec (see above); empty: the defaults")
	c.Flags().StringVar(&out, "out", "", "capture file to write")
	_ = c.MarkFlagRequired("out")
	return c
}
