package proxy

import (
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/syngate/syngate/flow"
)

// TestMillionConns tracks a million spliced connections in the engine's
// table (each indexed by client tuple and backend leg, as a splice leaves
// it) and reports the process memory per connection; the default MaxConns
// takes them all and refuses the one past it. -short tracks a tenth.
func TestMillionConns(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n /= 10
	}
	svc := &service{Service: Service{Backend: backend}}
	tab := newConnTable(n)
	now := time.Unix(0, 0)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	start := time.Now()
	for i := range n {
		ft := flow.Tuple{
			Client:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%50000)),
			Service: vip,
		}
		c, created := tab.getOrCreate(svc, ft, now)
		if !created {
			t.Fatalf("connection %d refused", i)
		}
		c.source = netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 22), byte(i >> 14)}), uint16(16384+i%16384))
		tab.setSource(c, legKey{source: c.source, backend: backend})
		tab.opened(c)
		c.state = stateSpliced
	}
	took := time.Since(start)
	after := heap()
	per := float64(after-before) / float64(n)
	t.Logf("%d connections tracked in %v; Go heap %.1f MiB, %.0f bytes per connection (conn %d bytes + two index entries)",
		n, took.Round(time.Millisecond), float64(after-before)/(1<<20), per, connSize())
	extra := flow.Tuple{Client: netip.MustParseAddrPort("10.255.255.255:1"), Service: vip}
	if c, _ := tab.getOrCreate(svc, extra, now); c != nil || tab.full.Load() != 1 {
		t.Errorf("connection past the bound: %v, refusals %d; want refused and counted", c, tab.full.Load())
	}
	if per > 4096 {
		t.Errorf("%.0f bytes per connection", per)
	}
	runtime.KeepAlive(tab)
}

func connSize() uintptr {
	var c conn
	return unsafe.Sizeof(c)
}
