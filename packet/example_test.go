package packet_test

import (
	"fmt"
	"net/netip"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

// A SYN arrives in a 2 KiB AF_XDP chunk and is answered in place.
func ExampleReplySynAck() {
	chunk := make([]byte, 2048)

	// What a Linux client would send (built here for the example).
	n, _ := packet.BuildSyn(chunk[:0], &packet.Fields{
		SrcMAC: [6]byte{2, 0, 0, 0, 0, 1}, DstMAC: [6]byte{2, 0, 0, 0, 0, 2},
		Src: netip.MustParseAddrPort("192.0.2.10:40000"),
		Dst: netip.MustParseAddrPort("198.51.100.1:80"),
		Seq: 1000, Window: 64240,
		Options: flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 555},
	})

	var syn packet.Segment
	if err := packet.Parse(chunk[:n], &syn); err != nil {
		fmt.Println("drop:", err)
		return
	}
	fmt.Println(syn.Tuple, syn.Flags, syn.Options.MSS, syn.Options.WScale)

	// The reply overwrites the SYN; the chunk's capacity bounds it.
	n = packet.ReplySynAck(chunk[:0], &syn, 0xc0ffee, spec.Offer{
		Window: 65535, MSS: 1400, WScale: flow.NoWScale, SACK: true, Timestamps: true,
	}, 777)

	var synack packet.Segment
	_ = packet.Parse(chunk[:n], &synack)
	fmt.Println(synack.Src, "->", synack.Dst, synack.Flags, synack.Seq, synack.Ack)
	fmt.Printf("%+v\n", synack.Options)
	fmt.Println(packet.VerifyChecksums(chunk[:n], &synack))
	// Output:
	// 192.0.2.10:40000 -> 198.51.100.1:80 SYN 1460 7
	// 198.51.100.1:80 -> 192.0.2.10:40000 SYN|ACK 12648430 1001
	// {MSS:1400 WScale:255 SACK:true Timestamps:true TSval:777 TSecr:555 ECN:false}
	// <nil>
}
