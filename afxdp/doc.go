// Package afxdp opens AF_XDP sockets with golang.org/x/sys/unix (no cgo):
// one socket per receive queue, each with its own UMEM, fill, completion,
// RX and TX rings, a free list that accounts for every frame, need-wakeup
// kicks, and zero-copy with fallback to copy mode. A Socket implements
// pktio.Port, so the handshake engine reads SYNs from it and writes
// SYN-ACKs into the same frames.
//
//	var s *afxdp.Socket
//	err := ns.Run(func() (err error) { // or directly, in the host namespace
//		s, err = afxdp.Open("eth0", 0, afxdp.Config{})
//		return err
//	})
//	...
//	defer s.Close()
//	xskmap.Put(uint32(s.Queue()), uint32(s.FD())) // then redirect to it from XDP
//	pkts := make([]pktio.Packet, 64)
//	n, err := s.Receive(pkts)
//
// Frames follow pktio's ownership rules. Received frames start 256 bytes
// into their frame (the kernel's XDP headroom), so they can grow in place
// to FrameSize-256 bytes; fresh frames from Alloc start at the frame.
//
// Needs CAP_NET_RAW (socket), CAP_NET_ADMIN (bind) and, for the XDP program
// and XSKMAP, CAP_BPF; Linux 5.4 or later (need-wakeup flags in the ring
// offsets). On veth only copy mode exists; ModeAuto finds that out itself.
package afxdp
