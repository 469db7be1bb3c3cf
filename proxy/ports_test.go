package proxy

import (
	"errors"
	"testing"
	"time"
)

func TestPortPoolUniqueAndQuiet(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p, err := newPortPool(100, 109, 60*time.Second, t0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]bool{}
	for i := 0; i < 10; i++ {
		l, err := p.get(t0)
		if err != nil {
			t.Fatal(err)
		}
		if l.port < 100 || l.port > 109 || seen[l.port] || l.hasFloor {
			t.Fatalf("lease %+v: out of range, handed out twice, or a fresh port with a floor", l)
		}
		seen[l.port] = true
	}
	if _, err := p.get(t0); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("11th get: err = %v, want ErrNoPorts", err)
	}
	p.put(105, t0, 0, false)
	p.put(105, t0, 0, false) // double release must not make 105 available twice
	p.put(3, t0, 0, false)   // out of range: ignored
	if _, err := p.get(t0.Add(59 * time.Second)); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("port reused inside its quiet time: err = %v", err)
	}
	l, err := p.get(t0.Add(60 * time.Second))
	if err != nil || l.port != 105 {
		t.Fatalf("after quiet time got %+v, %v; want 105", l, err)
	}
	if _, err := p.get(t0.Add(time.Hour)); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("double release handed a port out twice: err = %v", err)
	}
	if got := p.inuse(); got != 10 {
		t.Errorf("inuse = %d, want 10", got)
	}
}

// TestPortPoolImmediateReuseKeepsFloor: without a quiet time a freed port
// is handed out at once, with the floor its last connection left, which
// the engine's next ISN must exceed.
func TestPortPoolImmediateReuseKeepsFloor(t *testing.T) {
	t0 := time.Unix(0, 0)
	p, _ := newPortPool(1, 2, 0, t0)
	a, _ := p.get(t0)
	b, _ := p.get(t0)
	p.put(b.port, t0, 4242, true)
	p.put(a.port, t0, 0, false) // floor unknown
	l, err := p.get(t0)
	if err != nil || l.port != b.port || !l.hasFloor || l.floor != 4242 {
		t.Fatalf("first reuse = %+v, %v; want port %d with floor 4242", l, err, b.port)
	}
	l, err = p.get(t0)
	if err != nil || l.port != a.port || l.hasFloor {
		t.Fatalf("second reuse = %+v, %v; want port %d without floor", l, err, a.port)
	}
	if _, err := p.get(t0); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("third get: err = %v, want ErrNoPorts", err)
	}
}

func TestPortPoolFIFOReuse(t *testing.T) {
	t0 := time.Unix(0, 0)
	p, _ := newPortPool(1, 3, time.Second, t0)
	for i := 0; i < 3; i++ {
		p.get(t0)
	}
	p.put(2, t0, 0, false)
	p.put(1, t0.Add(time.Millisecond), 0, false)
	p.put(3, t0.Add(2*time.Millisecond), 0, false)
	var got []uint16
	for i := 0; i < 3; i++ {
		l, err := p.get(t0.Add(2 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l.port)
	}
	if got[0] != 2 || got[1] != 1 || got[2] != 3 {
		t.Errorf("reuse order %v, want oldest first [2 1 3]", got)
	}
}

// TestPortPoolSweep: sweeps visit the ports in use in turn, each once per
// round, skipping free ones.
func TestPortPoolSweep(t *testing.T) {
	t0 := time.Unix(0, 0)
	p, _ := newPortPool(10, 15, 0, t0)
	for i := 0; i < 6; i++ {
		p.get(t0)
	}
	p.put(12, t0, 0, false)
	var got []uint16
	for i := 0; i < 3; i++ {
		got = append(got, p.sweep(2)...)
	}
	want := []uint16{10, 11, 13, 14, 15, 10}
	if len(got) != len(want) {
		t.Fatalf("sweeps = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sweeps = %v, want %v", got, want)
		}
	}
}

func TestPortPoolBadRange(t *testing.T) {
	if _, err := newPortPool(10, 9, 0, time.Time{}); err == nil {
		t.Error("min > max accepted")
	}
	if _, err := newPortPool(0, 9, 0, time.Time{}); err == nil {
		t.Error("port 0 accepted")
	}
}

func BenchmarkPortPool(b *testing.B) {
	now := time.Unix(0, 0)
	p, _ := newPortPool(1024, 65535, 0, now)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l, err := p.get(now)
		if err != nil {
			b.Fatal(err)
		}
		p.put(l.port, now, 0, false)
	}
}
