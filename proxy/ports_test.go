package proxy

import (
	"errors"
	"testing"
	"time"
)

func TestPortPoolUniqueAndQuiet(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p, err := newPortPool(100, 109, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]bool{}
	for i := 0; i < 10; i++ {
		port, err := p.get(t0)
		if err != nil {
			t.Fatal(err)
		}
		if port < 100 || port > 109 || seen[port] {
			t.Fatalf("port %d out of range or handed out twice", port)
		}
		seen[port] = true
	}
	if _, err := p.get(t0); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("11th get: err = %v, want ErrNoPorts", err)
	}
	p.put(105, t0)
	p.put(105, t0) // double release must not make 105 available twice
	p.put(3, t0)   // out of range: ignored
	if _, err := p.get(t0.Add(59 * time.Second)); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("port reused inside its quiet time: err = %v", err)
	}
	port, err := p.get(t0.Add(60 * time.Second))
	if err != nil || port != 105 {
		t.Fatalf("after quiet time got %d, %v; want 105", port, err)
	}
	if _, err := p.get(t0.Add(time.Hour)); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("double release handed a port out twice: err = %v", err)
	}
	if got := p.inuse(); got != 10 {
		t.Errorf("inuse = %d, want 10", got)
	}
}

func TestPortPoolFIFOReuse(t *testing.T) {
	t0 := time.Unix(0, 0)
	p, _ := newPortPool(1, 3, time.Second)
	for i := 0; i < 3; i++ {
		p.get(t0)
	}
	p.put(2, t0)
	p.put(1, t0.Add(time.Millisecond))
	p.put(3, t0.Add(2*time.Millisecond))
	var got []uint16
	for i := 0; i < 3; i++ {
		port, err := p.get(t0.Add(2 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, port)
	}
	if got[0] != 2 || got[1] != 1 || got[2] != 3 {
		t.Errorf("reuse order %v, want oldest first [2 1 3]", got)
	}
}

func TestPortPoolBadRange(t *testing.T) {
	if _, err := newPortPool(10, 9, 0); err == nil {
		t.Error("min > max accepted")
	}
	if _, err := newPortPool(0, 9, 0); err == nil {
		t.Error("port 0 accepted")
	}
}

func BenchmarkPortPool(b *testing.B) {
	p, _ := newPortPool(1024, 65535, 0)
	now := time.Unix(0, 0)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		port, err := p.get(now)
		if err != nil {
			b.Fatal(err)
		}
		p.put(port, now)
	}
}
