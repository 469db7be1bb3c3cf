package pktio

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func mustSend(t *testing.T, p Port, frame []byte) {
	t.Helper()
	if err := Send(p, frame); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func TestPipeCarriesFramesBothWays(t *testing.T) {
	a, b := Pipe(MemConfig{})
	defer a.Close()
	defer b.Close()
	mustSend(t, a, []byte("to b"))
	mustSend(t, b, []byte("to a"))
	if got, err := Recv(b, time.Second); err != nil || string(got) != "to b" {
		t.Fatalf("b received %q, %v", got, err)
	}
	if got, err := Recv(a, time.Second); err != nil || string(got) != "to a" {
		t.Fatalf("a received %q, %v", got, err)
	}
	if got, err := Recv(a, 10*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("empty port: Recv = %q, %v; want ErrTimeout", got, err)
	}
	for _, p := range []*MemPort{a, b} {
		s := p.Stats()
		if s.Transmitted != 1 || s.Delivered != 1 || s.Received != 1 || s.Dropped != 0 || s.Lent != 0 || s.Free != 256 {
			t.Errorf("stats %+v", s)
		}
	}
}

func TestBatchOrderAndInPlaceReply(t *testing.T) {
	a, b := Pipe(MemConfig{Frames: 16, FrameSize: 128})
	pkts := make([]Packet, 8)
	if n := a.Alloc(pkts[:5]); n != 5 {
		t.Fatalf("alloc %d", n)
	}
	for i := range pkts[:5] {
		if len(pkts[i].Data) != 0 || cap(pkts[i].Data) != 128 {
			t.Fatalf("fresh frame len %d cap %d", len(pkts[i].Data), cap(pkts[i].Data))
		}
		pkts[i].Data = append(pkts[i].Data, byte(i), 'x', 'y')
	}
	if n, err := a.Transmit(pkts[:5]); n != 5 || err != nil {
		t.Fatalf("transmit %d, %v", n, err)
	}
	n, err := b.Receive(pkts)
	if err != nil || n != 5 {
		t.Fatalf("receive %d, %v", n, err)
	}
	for i, p := range pkts[:n] {
		if !bytes.Equal(p.Data, []byte{byte(i), 'x', 'y'}) || cap(p.Data) != 128 {
			t.Fatalf("frame %d: %q cap %d", i, p.Data, cap(p.Data))
		}
		// Rewrite in place: drop the first byte, grow to the end of
		// the frame.
		p.Data = p.Data[1:cap(p.Data)]
		p.Data[0] = 'A' + byte(i)
		pkts[i] = p
	}
	if n, err := b.Transmit(pkts[:n]); n != 5 || err != nil {
		t.Fatalf("reply %d, %v", n, err)
	}
	n, _ = a.Receive(pkts)
	if n != 5 {
		t.Fatalf("got %d replies", n)
	}
	for i, p := range pkts[:n] {
		if len(p.Data) != 127 || p.Data[0] != 'A'+byte(i) || p.Data[1] != 'y' {
			t.Fatalf("reply %d: len %d %q", i, len(p.Data), p.Data[:2])
		}
	}
	a.Release(pkts[:n])
	if s := a.Stats(); s.Lent != 0 || s.Free != 16 {
		t.Fatalf("a leaks frames: %+v", s)
	}
	if s := b.Stats(); s.Lent != 0 || s.Free != 16 {
		t.Fatalf("b leaks frames: %+v", s)
	}
}

func TestFullQueueDropsAndCounts(t *testing.T) {
	a, b := Pipe(MemConfig{Frames: 32, RxQueue: 4})
	for i := 0; i < 10; i++ {
		mustSend(t, a, []byte{byte(i)})
	}
	if s := a.Stats(); s.Transmitted != 10 || s.Delivered != 4 || s.Dropped != 6 {
		t.Fatalf("sender stats %+v", s)
	}
	pkts := make([]Packet, 16)
	n, _ := b.Receive(pkts)
	if n != 4 {
		t.Fatalf("received %d, want the 4 that fit", n)
	}
	for i := range n {
		if pkts[i].Data[0] != byte(i) {
			t.Fatalf("frame %d carries %d: the first ones should survive", i, pkts[i].Data[0])
		}
	}
	// While b holds all but one of its frames, arrivals beyond that are
	// dropped too.
	held := make([]Packet, 32)
	m := b.Alloc(held[:27])
	if m != 27 {
		t.Fatalf("alloc %d", m)
	}
	mustSend(t, a, []byte("fits"))
	mustSend(t, a, []byte("no frame"))
	if s := a.Stats(); s.Delivered != 5 || s.Dropped != 7 {
		t.Fatalf("sender stats %+v", s)
	}
	b.Release(held[:m])
	b.Release(pkts[:n])
	if got, err := Recv(b, time.Second); err != nil || string(got) != "fits" {
		t.Fatalf("got %q %v", got, err)
	}
	if s := b.Stats(); s.Free != 32 || s.Lent != 0 {
		t.Fatalf("receiver stats %+v", s)
	}
}

func TestAllocIsBounded(t *testing.T) {
	a, _ := Pipe(MemConfig{Frames: 4})
	pkts := make([]Packet, 8)
	if n := a.Alloc(pkts); n != 4 {
		t.Fatalf("alloc %d of 4 frames", n)
	}
	if n := a.Alloc(pkts[4:]); n != 0 {
		t.Fatalf("alloc from an empty pool gave %d", n)
	}
	if err := Send(a, []byte("x")); !errors.Is(err, ErrNoFrame) {
		t.Fatalf("Send with no frames: %v", err)
	}
	a.Release(pkts[:2])
	if n := a.Alloc(pkts[4:]); n != 2 {
		t.Fatalf("alloc after release %d", n)
	}
}

func TestTransmitRefusesForeignData(t *testing.T) {
	a, b := Pipe(MemConfig{Frames: 4, FrameSize: 64})
	pkts := make([]Packet, 3)
	a.Alloc(pkts)
	pkts[0].Data = append(pkts[0].Data, 1)
	pkts[1].Data = append(pkts[1].Data, make([]byte, 65)...) // outgrew the frame: copied
	pkts[2].Data = append(pkts[2].Data, 3)
	n, err := a.Transmit(pkts)
	if n != 1 || !errors.Is(err, ErrFrame) {
		t.Fatalf("transmit = %d, %v; want 1, ErrFrame", n, err)
	}
	// Data of another frame under this frame's handle.
	bad := Packet{Data: pkts[2].Data, Handle: pkts[1].Handle}
	if n, err := a.Transmit([]Packet{bad}); n != 0 || !errors.Is(err, ErrFrame) {
		t.Fatalf("mismatched handle: %d, %v", n, err)
	}
	if n, err := a.Transmit([]Packet{{Data: pkts[2].Data[:0], Handle: pkts[2].Handle}}); n != 0 || !errors.Is(err, ErrFrame) {
		t.Fatalf("empty frame: %d, %v", n, err)
	}
	// A frame already transmitted is no longer the caller's.
	if n, err := a.Transmit(pkts[:1]); n != 0 || !errors.Is(err, ErrFrame) {
		t.Fatalf("transmit twice: %d, %v", n, err)
	}
	a.Release(pkts[1:])
	if s := a.Stats(); s.Free != 4 || s.Lent != 0 {
		t.Fatalf("stats %+v", s)
	}
	if got, _ := Recv(b, time.Second); !bytes.Equal(got, []byte{1}) {
		t.Fatalf("peer got %v", got)
	}
}

func TestReleaseOfFrameNotHeldPanics(t *testing.T) {
	a, _ := Pipe(MemConfig{Frames: 4})
	pkts := make([]Packet, 1)
	a.Alloc(pkts)
	a.Release(pkts)
	defer func() {
		if recover() == nil {
			t.Fatal("double release did not panic")
		}
	}()
	a.Release(pkts)
}

func TestWait(t *testing.T) {
	a, b := Pipe(MemConfig{})
	start := time.Now()
	if ok, err := b.Wait(20 * time.Millisecond); ok || err != nil {
		t.Fatalf("wait on idle port: %v, %v", ok, err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("wait returned after %v, before its timeout", d)
	}
	if ok, err := b.Wait(0); ok || err != nil {
		t.Fatalf("poll on idle port: %v, %v", ok, err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		Send(a, []byte("wake"))
	}()
	if ok, err := b.Wait(-1); !ok || err != nil {
		t.Fatalf("wait for frame: %v, %v", ok, err)
	}
	if ok, _ := b.Wait(0); !ok {
		t.Fatal("poll with a frame queued says not ready")
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(10 * time.Millisecond)
		a.Close()
	}()
	if _, err := a.Wait(-1); !errors.Is(err, ErrClosed) {
		t.Fatalf("wait across close: %v", err)
	}
	wg.Wait()
	if _, err := a.Receive(make([]Packet, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("receive after close: %v", err)
	}
	if err := Send(b, []byte("into the void")); err != nil {
		t.Fatalf("send to a closed peer should be a silent drop: %v", err)
	}
	if s := b.Stats(); s.Dropped != 1 {
		t.Fatalf("send to closed peer not counted as dropped: %+v", s)
	}
}

// TestFramesAreConserved drives both ends with random operations from two
// goroutines and checks that no frame is ever lost or duplicated.
func TestFramesAreConserved(t *testing.T) {
	const frames = 64
	a, b := Pipe(MemConfig{Frames: frames, FrameSize: 256, RxQueue: 16})
	var wg sync.WaitGroup
	for i, p := range []*MemPort{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			var held []Packet
			buf := make([]Packet, 8)
			for range 20000 {
				switch r.IntN(4) {
				case 0:
					n, _ := p.Receive(buf[:1+r.IntN(8)])
					held = append(held, buf[:n]...)
				case 1:
					n := p.Alloc(buf[:1+r.IntN(8)])
					for j := range buf[:n] {
						buf[j].Data = append(buf[j].Data, byte(j))
					}
					held = append(held, buf[:n]...)
				case 2:
					k := min(len(held), r.IntN(8))
					for j := range held[:k] {
						if len(held[j].Data) == 0 {
							held[j].Data = held[j].Data[:1]
						}
					}
					n, err := p.Transmit(held[:k])
					if err != nil || n != k {
						t.Errorf("transmit %d of %d: %v", n, k, err)
						return
					}
					held = held[k:]
				case 3:
					k := min(len(held), r.IntN(8))
					p.Release(held[:k])
					held = held[k:]
				}
			}
			p.Release(held)
		}()
	}
	wg.Wait()
	for _, p := range []*MemPort{a, b} {
		var queued int
		for {
			buf := make([]Packet, 8)
			n, _ := p.Receive(buf)
			if n == 0 {
				break
			}
			queued += n
			p.Release(buf[:n])
		}
		s := p.Stats()
		if s.Lent != 0 || s.Free != frames {
			t.Errorf("after the run: %+v (drained %d)", s, queued)
		}
		if s.Transmitted != s.Delivered+s.Dropped {
			t.Errorf("transmitted %d != delivered %d + dropped %d", s.Transmitted, s.Delivered, s.Dropped)
		}
	}
	if a.Stats().Delivered != b.Stats().Received || b.Stats().Delivered != a.Stats().Received {
		t.Errorf("delivered and received disagree: a %+v b %+v", a.Stats(), b.Stats())
	}
}

func BenchmarkPipeBatch(b *testing.B) {
	tx, rx := Pipe(MemConfig{Frames: 512, RxQueue: 256})
	pkts := make([]Packet, 32)
	b.ReportAllocs()
	b.SetBytes(64 * 32)
	for b.Loop() {
		n := tx.Alloc(pkts)
		for i := range pkts[:n] {
			pkts[i].Data = pkts[i].Data[:64]
		}
		tx.Transmit(pkts[:n])
		n, _ = rx.Receive(pkts)
		rx.Release(pkts[:n])
	}
}
