package loadgen

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1, 1 << 63, ^uint64(0)} {
		i := bucketOf(v)
		if i < prev || i >= numBuckets {
			t.Fatalf("bucket of %d is %d (previous %d)", v, i, prev)
		}
		prev = i
		if hi := bucketHigh(i); hi < v || (i > 0 && bucketHigh(i-1) >= v) {
			t.Fatalf("%d in bucket %d which ends at %d (previous ends at %d)", v, i, hi, bucketHigh(i-1))
		}
	}
	for i := 1; i < numBuckets; i++ {
		if bucketOf(bucketHigh(i)) != i || bucketOf(bucketHigh(i-1)+1) != i {
			t.Fatalf("bucket %d bounds do not round-trip", i)
		}
	}
}

func TestQuantilesMatchSortedSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	var samples []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		seed := rng.Uint64()
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, 0))
			local := make([]time.Duration, 0, 25000)
			for range 25000 {
				// Log-normal-ish spread from a few µs to a few s.
				d := time.Duration(r.ExpFloat64() * float64(time.Microsecond) * float64(uint64(1)<<r.IntN(20)))
				h.Record(d)
				local = append(local, d)
			}
			mu.Lock()
			samples = append(samples, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(samples)
	if h.Count() != uint64(len(samples)) {
		t.Fatalf("count %d, recorded %d", h.Count(), len(samples))
	}
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := samples[int(q*float64(len(samples))+0.999999)-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/subCount+1 {
			t.Errorf("q%.3f: %v, exact %v", q, got, exact)
		}
	}
	s := h.Summary()
	if s.Min != samples[0] || s.Max != samples[len(samples)-1] {
		t.Errorf("min/max %v/%v, want %v/%v", s.Min, s.Max, samples[0], samples[len(samples)-1])
	}
	if !(s.Min <= s.P50 && s.P50 <= s.P90 && s.P90 <= s.P99 && s.P99 <= s.Max) {
		t.Errorf("summary out of order: %+v", s)
	}
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Summary() != (Latency{}) {
		t.Error("empty histogram reports values")
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(1)
		for pb.Next() {
			h.Record(d)
			d = d*7 + 13&(1<<30-1)
		}
	})
}

func TestSuccessRateIgnoresCanceled(t *testing.T) {
	r := Report{Successes: 9, Failures: Failures{Timeout: 1, Canceled: 5}}
	if got := r.SuccessRate(); got != 0.9 {
		t.Errorf("success rate = %v, want 0.9 (canceled attempts have no verdict)", got)
	}
	if got := r.Failures.Judged(); got != 1 {
		t.Errorf("judged failures = %d, want 1", got)
	}
	if got := (Report{Failures: Failures{Canceled: 3}}).SuccessRate(); got != 1 {
		t.Errorf("nothing ended: %v, want 1", got)
	}
}
