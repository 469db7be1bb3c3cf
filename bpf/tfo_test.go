package bpf

import (
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

// TCP Fast Open options: a cookie (RFC 7413) and the pre-RFC experimental
// form (kind 254, magic 0xF989) older stacks still send.
var (
	optTFO    = layers.TCPOption{OptionType: 34, OptionData: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	optTFOExp = layers.TCPOption{OptionType: 254, OptionData: []byte{0xf9, 0x89, 1, 2, 3, 4, 5, 6, 7, 8}}
	optExp    = layers.TCPOption{OptionType: 254, OptionData: []byte{0x12, 0x34, 1, 2}}
)

// A SYN with data passes the SYN-payload filter when it carries a Fast Open
// option, and is answered with a SYN-ACK that acknowledges only the SYN.
func TestTFOSynPassesPayloadFilter(t *testing.T) {
	d := testDataplane(t, Config{DropBadFlags: true, DropSYNPayload: true})
	withSocket(t, d)
	for _, tc := range []struct {
		name string
		opts []layers.TCPOption
		want Verdict
	}{
		{"no option", []layers.TCPOption{optMSS}, VerdictDropSynPayload},
		{"RFC 7413 cookie", []layers.TCPOption{optMSS, optTFO}, VerdictXSKSyn},
		{"experimental TFO cookie", []layers.TCPOption{optMSS, optTFOExp}, VerdictXSKSyn},
		{"other experimental option", []layers.TCPOption{optMSS, optExp}, VerdictDropSynPayload},
	} {
		r := mustRun(t, d, frame(t, pkt{src: client4, dst: svc4, flags: "S", seq: 1000, opts: tc.opts, payload: []byte("GET / HTTP/1.1\r\n")}))
		if r.verdict != tc.want {
			t.Errorf("%s: verdict %v, want %v", tc.name, r.verdict, tc.want)
		}
	}

	// With XDP cookies, the SYN-ACK acknowledges the SYN and not the data.
	jar := testJar(t)
	if err := d.SetCookieKey(jar.DataplaneKey(time.Now())); err != nil {
		t.Fatal(err)
	}
	setCookieServices(t, d, spec.Offer{Window: 65535, MSS: 1460, WScale: 7, SACK: true, Timestamps: true})
	in := frame(t, pkt{src: client4, dst: svc4, flags: "S", seq: 1000, opts: []layers.TCPOption{optMSS, optTS(5, 0), optTFO}, payload: []byte("GET / HTTP/1.1\r\n")})
	r := mustRun(t, d, in)
	if r.verdict != VerdictTXSynAckCookie {
		t.Fatalf("TFO SYN with XDP cookies: verdict %v", r.verdict)
	}
	var sa packet.Segment
	if err := packet.Parse(r.out, &sa); err != nil {
		t.Fatal(err)
	}
	if sa.Flags != packet.SYN|packet.ACK || sa.Ack != 1001 || len(sa.Payload) != 0 {
		t.Errorf("SYN-ACK %v ack %d payload %d; want SYN|ACK acknowledging only the SYN (1001)", sa.Flags, sa.Ack, len(sa.Payload))
	}
}
