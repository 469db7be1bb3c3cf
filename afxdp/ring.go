package afxdp

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring is the shared index pair of one AF_XDP ring. The kernel and this
// process each own one index: whoever produces writes producer, whoever
// consumes writes consumer. Entries are written before the producer index
// is published and read after it is loaded; sync/atomic gives the
// release/acquire ordering the kernel side (smp_store_release,
// smp_load_acquire) expects. The cached copies spare an atomic load per
// call while the cache still answers the question.
type ring struct {
	mem        []byte
	producer   *uint32
	consumer   *uint32
	flags      *uint32
	mask       uint32
	size       uint32
	cachedProd uint32
	cachedCons uint32 // for producer rings: consumer + size, the first index we may not write
}

func mmapRing(fd int, pgoff uint64, off unix.XDPRingOffset, size uint32, entry uintptr) (ring, error) {
	length := int(off.Desc) + int(size)*int(entry)
	mem, err := unix.Mmap(fd, int64(pgoff), length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return ring{}, fmt.Errorf("mmap ring at %#x: %w", pgoff, err)
	}
	r := ring{
		mem:      mem,
		producer: (*uint32)(unsafe.Pointer(&mem[off.Producer])),
		consumer: (*uint32)(unsafe.Pointer(&mem[off.Consumer])),
		flags:    (*uint32)(unsafe.Pointer(&mem[off.Flags])),
		mask:     size - 1,
		size:     size,
	}
	r.cachedProd = atomic.LoadUint32(r.producer)
	r.cachedCons = atomic.LoadUint32(r.consumer)
	return r, nil
}

func (r *ring) unmap() {
	if r.mem != nil {
		unix.Munmap(r.mem)
		r.mem = nil
	}
}

// needWakeup reports whether the kernel asked to be kicked (XDP_USE_NEED_WAKEUP).
func (r *ring) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

// Producer side (fill and TX rings).

// free returns how many entries may be written, refreshing the consumer
// index only when the cache cannot grant n.
func (r *ring) free(n uint32) uint32 {
	free := r.cachedCons - r.cachedProd
	if free >= n {
		return free
	}
	r.cachedCons = atomic.LoadUint32(r.consumer) + r.size
	return r.cachedCons - r.cachedProd
}

// submit publishes n entries written after the previous producer index.
func (r *ring) submit(n uint32) {
	r.cachedProd += n
	atomic.StoreUint32(r.producer, r.cachedProd)
}

// pending is how many produced entries the kernel has not consumed yet.
func (r *ring) pending() uint32 {
	return r.cachedProd - atomic.LoadUint32(r.consumer)
}

// Consumer side (RX and completion rings).

// avail returns how many entries (at most n) are ready to read, refreshing
// the producer index only when the cache is empty.
func (r *ring) avail(n uint32) uint32 {
	entries := r.cachedProd - r.cachedCons
	if entries == 0 {
		r.cachedProd = atomic.LoadUint32(r.producer)
		entries = r.cachedProd - r.cachedCons
	}
	return min(entries, n)
}

// release hands n read entries back to the kernel.
func (r *ring) release(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}

// descRing is an RX or TX ring of packet descriptors.
type descRing struct {
	ring
	descs []unix.XDPDesc
}

// addrRing is a fill or completion ring of UMEM addresses.
type addrRing struct {
	ring
	addrs []uint64
}

func mmapDescRing(fd int, pgoff uint64, off unix.XDPRingOffset, size uint32) (descRing, error) {
	r, err := mmapRing(fd, pgoff, off, size, unsafe.Sizeof(unix.XDPDesc{}))
	if err != nil {
		return descRing{}, err
	}
	return descRing{ring: r, descs: unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&r.mem[off.Desc])), size)}, nil
}

func mmapAddrRing(fd int, pgoff uint64, off unix.XDPRingOffset, size uint32) (addrRing, error) {
	r, err := mmapRing(fd, pgoff, off, size, 8)
	if err != nil {
		return addrRing{}, err
	}
	return addrRing{ring: r, addrs: unsafe.Slice((*uint64)(unsafe.Pointer(&r.mem[off.Desc])), size)}, nil
}
