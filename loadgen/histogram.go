package loadgen

import (
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram buckets: values below subCount nanoseconds get a bucket each;
// above, every power of two is split into subCount equal buckets, so a
// quantile is off by at most 1/subCount (about 3%) of its value, whatever
// the scale, in a fixed 15 KiB.
const (
	subBits    = 5
	subCount   = 1 << subBits
	numBuckets = (64 - subBits + 1) * subCount
)

// Histogram records durations from many goroutines at once without locks.
// The zero value is ready to use.
type Histogram struct {
	buckets [numBuckets]atomic.Uint64
	count   atomic.Uint64
	sum     atomic.Uint64
	min     atomic.Uint64 // stored as ^value so the zero value means "none"
	max     atomic.Uint64
}

func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1 // v>>e is in [subCount, 2*subCount)
	return (e+1)*subCount + int(v>>e) - subCount
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	e := i/subCount - 1
	m := uint64(i%subCount + subCount)
	return (m+1)<<e - 1
}

// Record adds one duration; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.buckets[bucketOf(v)].Add(1)
	h.count.Add(1)
	h.sum.Add(v)
	for {
		old := h.min.Load()
		if old != 0 && ^old <= v || h.min.CompareAndSwap(old, ^v) {
			break
		}
	}
	for {
		old := h.max.Load()
		if old >= v || h.max.CompareAndSwap(old, v) {
			break
		}
	}
}

// Count is the number of recorded durations.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Quantile returns a duration at least as large as the fraction q of the
// recorded ones and at most 1/32 above the true quantile; zero when
// nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= rank {
			return time.Duration(min(bucketHigh(i), h.max.Load()))
		}
	}
	return time.Duration(h.max.Load()) // records raced with the walk
}

// Latency summarises a histogram.
type Latency struct {
	Count                         uint64
	Min, Mean, P50, P90, P99, Max time.Duration
}

// Summary returns the histogram's count, extremes, mean and usual
// percentiles.
func (h *Histogram) Summary() Latency {
	l := Latency{Count: h.count.Load()}
	if l.Count == 0 {
		return l
	}
	l.Min = time.Duration(^h.min.Load())
	l.Max = time.Duration(h.max.Load())
	l.Mean = time.Duration(h.sum.Load() / l.Count)
	l.P50, l.P90, l.P99 = h.Quantile(0.50), h.Quantile(0.90), h.Quantile(0.99)
	return l
}

// String reads like "n=200 p50=754µs p90=1.6ms p99=3.5ms max=4.4ms".
func (l Latency) String() string {
	if l.Count == 0 {
		return "n=0"
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	return fmt.Sprintf("n=%d p50=%v p90=%v p99=%v max=%v", l.Count, r(l.P50), r(l.P90), r(l.P99), r(l.Max))
}
