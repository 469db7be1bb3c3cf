package bpf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/flow"
)

// millionConns is the capacity the defaults are sized for.
const millionConns = 1_000_000

// xdpTX is the XDP_TX action: the fast path sends a flow's packet back out
// of lo, the egress its entry learned.
const xdpTX = 3

// flowPair returns the two flow entries of synthetic connection i: client
// 10.x.y.z:port -> svc4 and back4 -> 100.64.x.y:port, with a translation the
// fast path can apply (egress learned on lo, ifindex 1).
func flowPair(tb testing.TB, i int) (keys [2]syngateFlowKey, vals [2]syngateFlowVal) {
	client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%50000))
	// 16384 source ports per source address, as the engine's defaults.
	leg := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 22), byte(i >> 14)}), uint16(16384+i%16384))
	for d, kn := range []struct {
		k flow.Key
		n flow.NAT
	}{
		{flow.Key{Src: client, Dst: svc4}, flow.NAT{Src: leg, Dst: back4, SeqDelta: 1, AckDelta: 2, TSvalDelta: 3, TSecrDelta: 4, InShift: 7, OutShift: 7, Ifindex: 1}},
		{flow.Key{Src: back4, Dst: leg}, flow.NAT{Src: svc4, Dst: client, SeqDelta: 5, AckDelta: 6, TSvalDelta: 7, TSecrDelta: 8, InShift: 7, OutShift: 7, Ifindex: 1}},
	} {
		k, err := flowKey(kn.k)
		if err != nil {
			tb.Fatal(err)
		}
		v, err := flowValue(kn.n, k.Family)
		if err != nil {
			tb.Fatal(err)
		}
		keys[d], vals[d] = k, v
	}
	return keys, vals
}

// fillFlows installs the flow entries of connections [from, to) with batch
// updates.
func fillFlows(tb testing.TB, d *Dataplane, from, to int) {
	tb.Helper()
	const chunk = 32768 // entries per batch
	keys := make([]syngateFlowKey, 0, chunk)
	vals := make([]syngateFlowVal, 0, chunk)
	flush := func() {
		if len(keys) == 0 {
			return
		}
		if n, err := d.objs.Flows.BatchUpdate(keys, vals, nil); err != nil || n != len(keys) {
			tb.Fatalf("batch update of %d entries: %d, %v", len(keys), n, err)
		}
		keys, vals = keys[:0], vals[:0]
	}
	for i := from; i < to; i++ {
		k, v := flowPair(tb, i)
		keys = append(keys, k[0], k[1])
		vals = append(vals, v[0], v[1])
		if len(keys) >= chunk {
			flush()
		}
	}
	flush()
}

// mapMemlock is what the kernel charges for m (fdinfo's memlock: for a
// hash map without preallocation, the entries present).
func mapMemlock(tb testing.TB, m *ebpf.Map) uint64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD()))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "memlock:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no memlock in fdinfo")
	return 0
}

// lookupCost runs the fast path on the client->service packets of n
// connections spread over [0, conns), each once, and returns the mean time
// the kernel measured per packet: lookups of different entries, not one
// entry hot in the cache.
func lookupCost(tb testing.TB, d *Dataplane, conns, n int) time.Duration {
	tb.Helper()
	var total time.Duration
	opts := []layers.TCPOption{optNOP, optNOP, optTS(1, 2)}
	for j := range n {
		i := j * (conns / n)
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%50000))
		data := frame(tb, pkt{src: client, dst: svc4, flags: "A", opts: opts, payload: make([]byte, 100)})
		ret, per, err := d.objs.SyngateXdp.Benchmark(data, 1, nil)
		if err != nil {
			tb.Fatal(err)
		}
		if ret != xdpTX { // the entry was found and applied
			tb.Fatalf("connection %d: XDP action %d, want XDP_TX (the fast path)", i, ret)
		}
		total += per
	}
	return total / time.Duration(n)
}

// TestMillionFlows fills the flow table with the entries of a million
// spliced connections (its default size, 2,097,152 entries), reports the
// kernel memory per connection and the fast path's cost per packet against
// a nearly empty table, checks that a full table refuses an insert with
// ErrFlowTableFull without evicting anything, and that the fast path still
// finds every sampled entry. -short fills a tenth.
func TestMillionFlows(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	conns := millionConns
	if testing.Short() {
		conns /= 10
	}
	d := testDataplane(t, Config{MaxFlows: 2 * conns})
	const sample = 2000
	fillFlows(t, d, 0, sample)
	base := mapMemlock(t, d.objs.Flows)
	small := lookupCost(t, d, sample, sample)

	start := time.Now()
	fillFlows(t, d, sample, conns)
	fill := time.Since(start)
	full := mapMemlock(t, d.objs.Flows)
	perConn := float64(full-base) / float64(conns-sample)
	large := lookupCost(t, d, conns, sample)
	t.Logf("%d connections (%d entries): batch update %v (%.0f ns/entry); kernel memory %.1f MiB, %.0f bytes per connection (2 entries)",
		conns, 2*conns, fill.Round(time.Millisecond), float64(fill.Nanoseconds())/float64(2*(conns-sample)), float64(full)/(1<<20), perConn)
	t.Logf("fast path per packet (lookup + rewrite, %d distinct flows, kernel-timed): %v with %d entries, %v with %d entries",
		sample, small, 2*sample, large, 2*conns)
	// What the engine's expiry scan pays: one LookupFlow (a syscall) per
	// direction and connection every scan.
	start = time.Now()
	const lookups = 20000
	for j := range lookups {
		i := j * (conns / lookups)
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%50000))
		if _, err := d.LookupFlow(flow.Key{Src: client, Dst: svc4}); err != nil {
			t.Fatal(err)
		}
	}
	perLookup := time.Since(start) / lookups
	t.Logf("LookupFlow from Go: %v per call; an expiry scan of %d connections (2 lookups each) costs about %v of CPU",
		perLookup, conns, time.Duration(2*conns)*perLookup)
	// What the engine's orphan scan pays: the whole table, in batches.
	start = time.Now()
	entries := 0
	if err := d.IterateFlows(func(flow.Key, flow.State) bool { entries++; return true }); err != nil {
		t.Fatal(err)
	}
	t.Logf("IterateFlows over %d entries: %v", entries, time.Since(start).Round(time.Millisecond))
	if entries != 2*conns {
		t.Errorf("IterateFlows saw %d entries, want %d", entries, 2*conns)
	}
	if perConn < 2*float64(binarySizeFlow()) || perConn > 2048 {
		t.Errorf("%.0f bytes per connection: implausible for two %d-byte entries", perConn, binarySizeFlow())
	}

	// Full: the next insert is refused, nothing is evicted.
	extra := flow.Key{Src: netip.MustParseAddrPort("10.255.255.255:1"), Dst: svc4}
	err := d.InstallFlow(extra, flow.NAT{Src: netip.AddrPortFrom(local4, 40000), Dst: back4})
	if !errors.Is(err, ErrFlowTableFull) {
		t.Fatalf("insert into a full table: %v, want ErrFlowTableFull", err)
	}
	if got := mapMemlock(t, d.objs.Flows); got != full {
		t.Errorf("memory %d after a refused insert, was %d", got, full)
	}
	lookupCost(t, d, conns, sample) // every sampled entry still there
}

// binarySizeFlow is one entry's key and value.
func binarySizeFlow() int { return binary.Size(syngateFlowKey{}) + binary.Size(syngateFlowVal{}) }
