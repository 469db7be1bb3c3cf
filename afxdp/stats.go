package afxdp

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Counters are kept by the socket itself.
type Counters struct {
	RxPackets    uint64 // frames handed out by Receive
	TxPackets    uint64 // frames queued by Transmit
	TxCompleted  uint64 // frames the kernel reported sent
	RxKicks      uint64 // wake-ups of the fill ring (need-wakeup)
	TxKicks      uint64 // sendto calls to drive TX
	TxKickErrors uint64 // sendto failures other than "busy"
	BadReleases  uint64 // Release of frames the caller did not hold
	BadAddrs     uint64 // descriptors from the kernel naming no frame we gave it
}

// Stats combines the kernel's XDP_STATISTICS with the socket's counters.
type Stats struct {
	RxDropped            uint64 // frames dropped for reasons other than invalid descriptors
	RxInvalidDescs       uint64 // invalid descriptors on the fill ring
	TxInvalidDescs       uint64 // invalid descriptors on the TX ring
	RxRingFull           uint64 // frames dropped because the RX ring was full
	RxFillRingEmptyDescs uint64 // times the fill ring had no frame for an arrival
	TxRingEmptyDescs     uint64 // times the kernel found the TX ring empty
	Counters
	FreeFrames   int // frames in the free list
	LentFrames   int // frames the caller holds
	KernelFrames int // frames in the fill, RX, TX or completion ring
}

// Stats reads the kernel's statistics of the socket.
func (s *Socket) Stats() (Stats, error) {
	st := Stats{Counters: s.counters}
	for _, f := range s.state {
		switch f {
		case frameFree:
			st.FreeFrames++
		case frameLent:
			st.LentFrames++
		case frameKernel:
			st.KernelFrames++
		}
	}
	if s.closed {
		return st, nil
	}
	var ks unix.XDPStatistics
	if _, err := getsockopt(s.fd, unix.XDP_STATISTICS, unsafe.Pointer(&ks), unsafe.Sizeof(ks)); err != nil {
		return st, fmt.Errorf("read af_xdp statistics: %w", err)
	}
	st.RxDropped = ks.Rx_dropped
	st.RxInvalidDescs = ks.Rx_invalid_descs
	st.TxInvalidDescs = ks.Tx_invalid_descs
	st.RxRingFull = ks.Rx_ring_full
	st.RxFillRingEmptyDescs = ks.Rx_fill_ring_empty_descs
	st.TxRingEmptyDescs = ks.Tx_ring_empty_descs
	return st, nil
}

// KernelStats reads only the kernel's XDP_STATISTICS of the socket (the
// Stats fields up to TxRingEmptyDescs). Unlike Stats it touches none of the
// state the goroutine driving the socket owns, so a metrics scrape may call
// it at any time before Close.
func (s *Socket) KernelStats() (Stats, error) {
	var st Stats
	var ks unix.XDPStatistics
	if _, err := getsockopt(s.fd, unix.XDP_STATISTICS, unsafe.Pointer(&ks), unsafe.Sizeof(ks)); err != nil {
		return st, fmt.Errorf("read af_xdp statistics: %w", err)
	}
	st.RxDropped = ks.Rx_dropped
	st.RxInvalidDescs = ks.Rx_invalid_descs
	st.TxInvalidDescs = ks.Tx_invalid_descs
	st.RxRingFull = ks.Rx_ring_full
	st.RxFillRingEmptyDescs = ks.Rx_fill_ring_empty_descs
	st.TxRingEmptyDescs = ks.Tx_ring_empty_descs
	return st, nil
}
