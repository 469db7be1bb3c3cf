package bpf

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// TestFlowHint: the hint counts every flow entry the Dataplane adds,
// replaces and removes, is rebuilt from the table when a Dataplane opens
// one that already holds entries, and never hides a flow entry from a SYN:
// a SYN on a spliced 4-tuple still reaches the engine while the service's
// SYNs are answered in XDP or TC.
func TestFlowHint(t *testing.T) {
	requireRoot(t)
	d := testDataplane(t, Config{DropBadFlags: true})
	withSocket(t, d)
	setCookieServices(t, d, spec.Offer{Window: 65535, MSS: 1460, WScale: 7, SACK: true, Timestamps: true})
	if err := d.SetCookieKey(testJar(t).DataplaneKey(time.Now())); err != nil {
		t.Fatal(err)
	}
	if d.hint == nil || atomic.LoadUint64(&d.hint.counts[flowHintOn]) != 1 {
		t.Fatal("flow hint not on")
	}
	syn := pkt{src: client4, dst: svc4, flags: "S", opts: []layers.TCPOption{optMSS}}
	key := flow.Key{Src: client4, Dst: svc4}
	k, _ := flowKey(key)
	slot := flowHintIndex(&k)
	count := func() uint64 { return atomic.LoadUint64(&d.hint.counts[slot]) }
	verdict := func() Verdict { return mustRun(t, d, frame(t, syn)).verdict }
	// The TC program asks the same hint: a SYN on a spliced 4-tuple goes to
	// the engine's ring (none here: no socket), any other gets a cookie.
	tcMinted := func() bool {
		_, _, moved := runTC(t, d, frame(t, syn), 0)
		return moved[VerdictTXSynAckCookie].Packets == 1
	}

	if v := verdict(); v != VerdictTXSynAckCookie {
		t.Fatalf("no flow: verdict %v, want a cookie", v)
	}
	nat := flow.NAT{Src: netip.AddrPortFrom(local4, 40000), Dst: back4, Ifindex: 1}
	if err := d.InstallFlow(key, nat); err != nil {
		t.Fatal(err)
	}
	if count() != 1 {
		t.Fatalf("after install: count %d, want 1", count())
	}
	if _, err := d.LookupFlow(key); err != nil {
		t.Fatalf("lookup of the installed flow: %v", err)
	}
	if v := verdict(); v != VerdictXSKSyn {
		t.Fatalf("spliced 4-tuple: verdict %v, want the engine's", v)
	}
	if tcMinted() {
		t.Fatal("spliced 4-tuple: the TC program answered with a cookie")
	}
	// The programs read the counts from the mapped memory: with the slot
	// forced to zero they would skip the table (never done outside tests).
	atomic.StoreUint64(&d.hint.counts[slot], 0)
	if v := verdict(); v != VerdictTXSynAckCookie {
		t.Fatalf("zeroed slot: verdict %v, want a cookie (the hint unread?)", v)
	}
	if !tcMinted() {
		t.Fatal("zeroed slot: the TC program did not answer with a cookie (the hint unread?)")
	}
	atomic.StoreUint64(&d.hint.counts[slot], 1)
	// Replacing the entry does not count it twice.
	nat.SeqDelta = 7
	if err := d.InstallFlow(key, nat); err != nil {
		t.Fatal(err)
	}
	if count() != 1 {
		t.Fatalf("after replace: count %d, want 1", count())
	}
	// A Dataplane that opens a table holding entries counts them.
	h2, err := openFlowHint(d.objs.FlowHint, d.objs.Flows)
	if err != nil {
		t.Fatal(err)
	}
	if c := atomic.LoadUint64(&h2.counts[slot]); c != 2 { // the same memory: 1 + 1 counted again
		t.Errorf("rebuilt count %d, want 2 (the table's entry counted on top)", c)
	}
	atomic.AddUint64(&h2.counts[slot], ^uint64(0))
	h2.close()

	if err := d.DeleteFlow(key); err != nil {
		t.Fatal(err)
	}
	if count() != 0 {
		t.Fatalf("after delete: count %d, want 0", count())
	}
	if err := d.DeleteFlow(key); err == nil {
		t.Fatal("second delete succeeded")
	}
	if count() != 0 {
		t.Fatalf("a failed delete changed the count to %d", count())
	}
	if v := verdict(); v != VerdictTXSynAckCookie {
		t.Fatalf("flow removed: verdict %v, want a cookie", v)
	}
	// A lookup the hint answers says "not found" as the table would.
	if _, err := d.LookupFlow(key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of the removed flow: %v, want ErrNotFound", err)
	}
}
