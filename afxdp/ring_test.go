package afxdp

import (
	"errors"
	"sync/atomic"
	"testing"
)

// fakeRing returns a ring over plain memory whose indices start at start,
// so the tests can cross the 32-bit wrap-around.
func fakeRing(size, start uint32, producer bool) (*ring, *uint32, *uint32) {
	var prod, cons, flags uint32 = start, start, 0
	r := &ring{producer: &prod, consumer: &cons, flags: &flags, mask: size - 1, size: size,
		cachedProd: start, cachedCons: start}
	if producer {
		r.cachedCons += size
	}
	return r, &prod, &cons
}

func TestProducerRingAcrossWrap(t *testing.T) {
	for _, start := range []uint32{0, 1<<32 - 3} {
		r, prod, cons := fakeRing(8, start, true)
		if got := r.free(8); got != 8 {
			t.Fatalf("start %#x: free %d on an empty ring", start, got)
		}
		r.submit(6)
		if atomic.LoadUint32(prod) != start+6 {
			t.Fatalf("producer %d, want %d", *prod, start+6)
		}
		if got := r.free(3); got != 2 {
			t.Fatalf("free %d with 6 of 8 used and the consumer idle", got)
		}
		if got := r.pending(); got != 6 {
			t.Fatalf("pending %d", got)
		}
		atomic.StoreUint32(cons, start+5) // the kernel consumed 5
		if got := r.free(2); got != 2 {
			t.Fatalf("free from cache %d", got)
		}
		if got := r.free(7); got != 7 {
			t.Fatalf("free after the kernel consumed: %d, want 7", got)
		}
		r.submit(7)
		if got := r.free(1); got != 0 {
			t.Fatalf("free %d on a full ring", got)
		}
	}
}

func TestConsumerRingAcrossWrap(t *testing.T) {
	for _, start := range []uint32{0, 1<<32 - 2} {
		r, prod, cons := fakeRing(4, start, false)
		if got := r.avail(4); got != 0 {
			t.Fatalf("avail %d on an empty ring", got)
		}
		atomic.StoreUint32(prod, start+3)
		if got := r.avail(2); got != 2 {
			t.Fatalf("avail capped at 2: %d", got)
		}
		r.release(2)
		if atomic.LoadUint32(cons) != start+2 {
			t.Fatalf("consumer %d", *cons)
		}
		if got := r.avail(4); got != 1 {
			t.Fatalf("avail %d, want the 1 left", got)
		}
		r.release(1)
		atomic.StoreUint32(prod, start+7)
		if got := r.avail(8); got != 4 {
			t.Fatalf("avail %d after wrap", got)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	good := Config{}
	if err := good.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if good.Frames != 4096 || good.FrameSize != 2048 || good.FillSize != 2048 || good.TxSize != 2048 {
		t.Fatalf("defaults %+v", good)
	}
	for _, c := range []Config{
		{FrameSize: 1000},
		{Frames: 1},
		{Frames: 64, RxSize: 48},
		{Frames: 64, FillSize: 128},
		{Mode: Mode(7)},
	} {
		if err := c.setDefaults(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", c, err)
		}
	}
}
