package packet

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"reflect"
	"testing"

	"github.com/syngate/syngate/flow"
)

// Golden frames, each with its rendering by `tcpdump -nn -e -v -S`.
var (
	// 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 74: (tos 0x0, ttl 64, id 7238, offset 0, flags [DF], proto TCP (6), length 60)
	//     192.0.2.10.40000 > 198.51.100.1.80: Flags [S], cksum 0x7e08 (correct), seq 1000, win 64240, options [mss 1460,sackOK,TS val 1000000 ecr 0,nop,wscale 7], length 0
	goldenSyn4 = unhex("02000000000202000000000108004500003c1c46400040063237c000020ac63364019c400050000003e800000000a002faf07e080000020405b40402080a000f42400000000001030307")

	// 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv6 (0x86dd), length 94: (hlim 64, next-header TCP (6) payload length: 40) 2001:db8::10.40001 > 2001:db8::1.443: Flags [SEW], cksum 0x70c7 (correct), seq 3735928559, win 64800, options [mss 1440,sackOK,TS val 1000000 ecr 0,nop,wscale 7], length 0
	goldenSyn6ECN = unhex("02000000000202000000000186dd600000000028064020010db800000000000000000000001020010db80000000000000000000000019c4101bbdeadbeef00000000a0c2fd2070c70000020405a00402080a000f42400000000001030307")

	// 02:00:00:00:00:02 > 02:00:00:00:00:01, ethertype 802.1Q (0x8100), length 70: vlan 100, p 5, ethertype IPv4 (0x0800), (tos 0x0, ttl 64, id 0, offset 0, flags [DF], proto TCP (6), length 52)
	//     198.51.100.1.80 > 192.0.2.10.40000: Flags [S.], cksum 0xe1f9 (correct), seq 77, ack 1001, win 65535, options [mss 1460,nop,nop,sackOK,nop,wscale 9], length 0
	goldenSynAckVLAN = unhex("0200000000010200000000028100a0640800450000340000400040064e85c6336401c000020a00509c400000004d000003e98012ffffe1f90000020405b40101040201030309")

	// 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 95: (tos 0x2,ECT(0), ttl 57, id 4242, offset 0, flags [none], proto TCP (6), length 81, options (NOP,NOP,NOP,EOL))
	//     192.0.2.10.40000 > 198.51.100.1.80: Flags [P.], cksum 0xd4ec (correct), seq 1001:1006, ack 5000, win 502, options [nop,nop,TS val 1 ecr 2,nop,nop,sack 2 {5000:6000}{7000:8000}], length 5: HTTP
	goldenDataSACK = unhex("02000000000202000000000108004602005110920000390681d3c000020ac6336401010101009c400050000003e900001388d01801f6d4ec00000101080a000000010000000201010512000013880000177000001b5800001f4068656c6c6f")

	// 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv6 (0x86dd), length 94: (hlim 1, next-header Options (0) payload length: 40) 2001:db8::10 > 2001:db8::1: HBH (padn) DSTOPT (padn) 40002 > 22: Flags [S], cksum 0x9d36 (correct), seq 5, win 1024, options [mss 1220], length 0
	goldenSyn6Ext = unhex("02000000000202000000000186dd600000000028000120010db800000000000000000000001020010db80000000000000000000000013c0001040000000006000104000000009c4200160000000500000000600204009d360000020404c4")

	// 02:00:00:00:00:02 > 02:00:00:00:00:01, ethertype IPv4 (0x0800), length 60: (tos 0x0, ttl 64, id 0, offset 0, flags [DF], proto TCP (6), length 40)
	//     198.51.100.1.80 > 192.0.2.10.40000: Flags [R.], cksum 0x2318 (correct), seq 0, ack 1001, win 0, length 0
	// (6 bytes of Ethernet padding follow the TCP header.)
	goldenRSTPadded = unhex("0200000000010200000000020800450000280000400040064e91c6336401c000020a00509c4000000000000003e95014000023180000000000000000")
)

var (
	macClient  = [6]byte{2, 0, 0, 0, 0, 1}
	macGateway = [6]byte{2, 0, 0, 0, 0, 2}
	client4    = netip.MustParseAddr("192.0.2.10")
	service4   = netip.MustParseAddr("198.51.100.1")
	client6    = netip.MustParseAddr("2001:db8::10")
	service6   = netip.MustParseAddr("2001:db8::1")
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// equalSegment compares two segments field by field, the payload by content.
func equalSegment(t *testing.T, got, want *Segment) {
	t.Helper()
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("payload = %q, want %q", got.Payload, want.Payload)
	}
	g, w := *got, *want
	g.Payload, w.Payload = nil, nil
	if !reflect.DeepEqual(g, w) {
		t.Errorf("segment mismatch\n got: %+v\nwant: %+v", g, w)
	}
}

func TestParseGolden(t *testing.T) {
	const noWS = flow.NoWScale
	tests := []struct {
		name  string
		frame []byte
		want  Segment
	}{{
		name:  "linux ipv4 syn",
		frame: goldenSyn4,
		want: Segment{
			DstMAC: macGateway, SrcMAC: macClient,
			Tuple: flow.Tuple{Client: ap(client4, 40000), Service: ap(service4, 80)},
			Src:   ap(client4, 40000), Dst: ap(service4, 80),
			TTL: 64, IPID: 0x1c46,
			Seq: 1000, Flags: SYN, Window: 64240, Checksum: 0x7e08,
			Options:   flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 1000000},
			MSSOffset: 56, WScaleOffset: 73, TSOffset: 62,
			IPOffset: 14, TCPOffset: 34, PayloadOffset: 74,
		},
	}, {
		name:  "ipv6 syn with ecn setup",
		frame: goldenSyn6ECN,
		want: Segment{
			DstMAC: macGateway, SrcMAC: macClient,
			Tuple: flow.Tuple{Client: ap(client6, 40001), Service: ap(service6, 443)},
			Src:   ap(client6, 40001), Dst: ap(service6, 443),
			TTL: 64,
			Seq: 0xdeadbeef, Flags: SYN | ECE | CWR, Window: 64800, Checksum: 0x70c7,
			Options:   flow.SynOptions{MSS: 1440, WScale: 7, SACK: true, Timestamps: true, TSval: 1000000, ECN: true},
			MSSOffset: 76, WScaleOffset: 93, TSOffset: 82,
			IPOffset: 14, TCPOffset: 54, PayloadOffset: 94,
		},
	}, {
		name:  "vlan syn-ack",
		frame: goldenSynAckVLAN,
		want: Segment{
			DstMAC: macClient, SrcMAC: macGateway, HasVLAN: true, VLAN: 5<<13 | 100,
			Tuple: flow.Tuple{Client: ap(service4, 80), Service: ap(client4, 40000)},
			Src:   ap(service4, 80), Dst: ap(client4, 40000),
			TTL: 64,
			Seq: 77, Ack: 1001, Flags: SYN | ACK, Window: 65535, Checksum: 0xe1f9,
			Options:   flow.SynOptions{MSS: 1460, WScale: 9, SACK: true},
			MSSOffset: 60, WScaleOffset: 69,
			IPOffset: 18, TCPOffset: 38, PayloadOffset: 70,
		},
	}, {
		name:  "ipv4 options, data with sack blocks",
		frame: goldenDataSACK,
		want: Segment{
			DstMAC: macGateway, SrcMAC: macClient,
			Tuple: flow.Tuple{Client: ap(client4, 40000), Service: ap(service4, 80)},
			Src:   ap(client4, 40000), Dst: ap(service4, 80),
			TTL: 57, TOS: 2, IPID: 4242,
			Seq: 1001, Ack: 5000, Flags: PSH | ACK, Window: 502, Checksum: 0xd4ec,
			Options: flow.SynOptions{WScale: noWS, Timestamps: true, TSval: 1, TSecr: 2},
			SACK:    [4]SACKBlock{{5000, 6000}, {7000, 8000}}, NumSACK: 2,
			TSOffset: 62, SACKOffset: 74,
			IPOffset: 14, TCPOffset: 38, PayloadOffset: 90,
			Payload: []byte("hello"),
		},
	}, {
		name:  "ipv6 syn behind hop-by-hop and destination options",
		frame: goldenSyn6Ext,
		want: Segment{
			DstMAC: macGateway, SrcMAC: macClient,
			Tuple: flow.Tuple{Client: ap(client6, 40002), Service: ap(service6, 22)},
			Src:   ap(client6, 40002), Dst: ap(service6, 22),
			TTL: 1,
			Seq: 5, Flags: SYN, Window: 1024, Checksum: 0x9d36,
			Options:   flow.SynOptions{MSS: 1220, WScale: noWS},
			MSSOffset: 92,
			IPOffset:  14, TCPOffset: 70, PayloadOffset: 94,
		},
	}, {
		name:  "rst-ack with ethernet padding",
		frame: goldenRSTPadded,
		want: Segment{
			DstMAC: macClient, SrcMAC: macGateway,
			Tuple: flow.Tuple{Client: ap(service4, 80), Service: ap(client4, 40000)},
			Src:   ap(service4, 80), Dst: ap(client4, 40000),
			TTL: 64,
			Ack: 1001, Flags: RST | ACK, Checksum: 0x2318,
			Options:  flow.SynOptions{WScale: noWS},
			IPOffset: 14, TCPOffset: 34, PayloadOffset: 54,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Segment
			if err := Parse(tt.frame, &s); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			equalSegment(t, &s, &tt.want)
			if cap(s.Payload) != len(s.Payload) {
				t.Errorf("payload cap %d > len %d: append would overwrite the frame", cap(s.Payload), len(s.Payload))
			}
			if err := VerifyChecksums(tt.frame, &s); err != nil {
				t.Errorf("VerifyChecksums: %v", err)
			}
			// The offsets point at the values they claim to.
			if s.MSSOffset != 0 && be16(tt.frame[s.MSSOffset:]) != s.Options.MSS {
				t.Errorf("MSSOffset %d does not hold the MSS", s.MSSOffset)
			}
			if s.TSOffset != 0 && (be32(tt.frame[s.TSOffset:]) != s.Options.TSval || be32(tt.frame[s.TSOffset+4:]) != s.Options.TSecr) {
				t.Errorf("TSOffset %d does not hold TSval/TSecr", s.TSOffset)
			}
			if s.WScaleOffset != 0 && tt.frame[s.WScaleOffset] != s.Options.WScale {
				t.Errorf("WScaleOffset %d does not hold the shift", s.WScaleOffset)
			}
			for i := 0; i < s.NumSACK; i++ {
				o := s.SACKOffset + 8*i
				if be32(tt.frame[o:]) != s.SACK[i].Left || be32(tt.frame[o+4:]) != s.SACK[i].Right {
					t.Errorf("SACK block %d not at offset %d", i, o)
				}
			}
		})
	}
}

func TestVerifyChecksumsDetectsCorruption(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		at    int
	}{
		{"ipv4 header", goldenSyn4, 14 + 8},           // TTL
		{"tcp header", goldenSyn4, 34 + 4},            // seq
		{"tcp payload", goldenDataSACK, 92},           // "hello"
		{"ipv6 pseudo-header", goldenSyn6ECN, 14 + 8}, // source address
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := bytes.Clone(tc.frame)
			f[tc.at] ^= 0x10
			var s Segment
			if err := Parse(f, &s); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if err := VerifyChecksums(f, &s); err != ErrBadChecksum {
				t.Errorf("VerifyChecksums = %v, want ErrBadChecksum", err)
			}
		})
	}
}
