package proxy

import (
	"fmt"
	"net/netip"
	"testing"
)

func poolOf(n int) []maglevEntry {
	var out []maglevEntry
	for i := range n {
		out = append(out, maglevEntry{addr: netip.MustParseAddrPort(fmt.Sprintf("10.0.%d.%d:8080", i/200, i%200+1)), weight: 1})
	}
	return out
}

// clients are 100,000 client addresses and ports.
func clients() []netip.AddrPort {
	var out []netip.AddrPort
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)})
		out = append(out, netip.AddrPortFrom(a, uint16(1024+i%50000)))
	}
	return out
}

// TestMaglevRemoveMovesOneNth: removing one of N backends moves the clients
// of that backend and about none of the others' (the paper's minimal
// disruption), for several N.
func TestMaglevRemoveMovesOneNth(t *testing.T) {
	cs := clients()
	for _, n := range []int{3, 5, 10, 50} {
		entries := poolOf(n)
		before := newMaglev(entries)
		removed := n / 2
		rest := append(append([]maglevEntry(nil), entries[:removed]...), entries[removed+1:]...)
		after := newMaglev(rest)
		moved, others := 0, 0
		for _, c := range cs {
			h := clientHash(c, true)
			a := entries[before.lookup(h)].addr
			b := rest[after.lookup(h)].addr
			if a != b {
				moved++
				if a != entries[removed].addr {
					others++
				}
			}
		}
		frac := float64(moved) / float64(len(cs))
		t.Logf("N=%d: removing one moved %.2f%% of clients (1/N = %.2f%%), %.2f%% of them from backends that stayed",
			n, 100*frac, 100/float64(n), 100*float64(others)/float64(len(cs)))
		if frac < 0.7/float64(n) || frac > 1.5/float64(n) {
			t.Errorf("N=%d: %.3f of clients moved, want about 1/N = %.3f", n, frac, 1/float64(n))
		}
		// Maglev trades a little disruption for balance; the paper
		// measures a few percent at most for small tables.
		if float64(others)/float64(len(cs)) > 0.03 {
			t.Errorf("N=%d: %d clients of backends that stayed moved", n, others)
		}
	}
}

// TestMaglevTablesAgree: two tables built independently (as two gateways
// would, with the pool listed in different orders) pick the same backend
// for every client.
func TestMaglevTablesAgree(t *testing.T) {
	entries := poolOf(7)
	entries[2].weight = 3
	reversed := make([]maglevEntry, len(entries))
	for i, e := range entries {
		reversed[len(entries)-1-i] = e
	}
	a, b := newMaglev(entries), newMaglev(reversed)
	for _, c := range clients() {
		h := clientHash(c, true)
		if x, y := entries[a.lookup(h)].addr, reversed[b.lookup(h)].addr; x != y {
			t.Fatalf("client %v: %v in one table, %v in the other", c, x, y)
		}
	}
}

// TestMaglevWeights: shares of the table and of clients follow weights,
// and weight 0 gets nothing.
func TestMaglevWeights(t *testing.T) {
	entries := poolOf(4)
	weights := []int{1, 2, 3, 0}
	for i := range entries {
		entries[i].weight = weights[i]
	}
	m := newMaglev(entries)
	count := make([]int, len(entries))
	for _, v := range m.table {
		count[v]++
	}
	hits := make([]int, len(entries))
	for _, c := range clients() {
		hits[m.lookup(clientHash(c, true))]++
	}
	t.Logf("table entries %v, clients %v for weights %v", count, hits, weights)
	for i, w := range weights {
		want := float64(w) / 6
		if got := float64(count[i]) / MaglevSize; got < want-0.01 || got > want+0.01 {
			t.Errorf("backend %d of weight %d: %.4f of the table, want %.4f", i, w, got, want)
		}
		if got := float64(hits[i]) / 100_000; got < want-0.02 || got > want+0.02 {
			t.Errorf("backend %d of weight %d: %.4f of clients, want %.4f", i, w, got, want)
		}
	}
}

// TestClientHashFixed pins the hash: gateways of different builds must
// agree, so a change of it is a deliberate, visible one.
func TestClientHashFixed(t *testing.T) {
	c := netip.MustParseAddrPort("192.0.2.7:40000")
	if a, b := clientHash(c, true), clientHash(c, true); a != b {
		t.Fatal("hash not deterministic")
	}
	if clientHash(c, false) != clientHash(netip.MustParseAddrPort("192.0.2.7:1"), false) {
		t.Error("address hash reads the port")
	}
	if clientHash(netip.MustParseAddrPort("[::ffff:192.0.2.7]:40000"), true) != clientHash(c, true) {
		t.Error("a v4-mapped address hashes differently from its IPv4 form")
	}
}
