package afxdp

import (
	"testing"
	"time"

	"github.com/syngate/syngate/pktio"
)

// benchLimit bounds a benchmark run whatever b.N the framework asks for.
const benchLimit = 20 * time.Second

// BenchmarkReceive measures frames per second from the veth into Go: a
// socket on the far end floods SYNs, the near XDP program redirects them
// into the socket under test, which receives and releases them.
func BenchmarkReceive(b *testing.B) {
	r := newRig(b, Config{})
	gen := r.openFar(b, Config{})
	frame := r.synFrame(b, 40000)

	defer floodFrames(gen, frame)()

	pkts := make([]pktio.Packet, 64)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	got := 0
	for got < b.N {
		n, err := r.sock.Receive(pkts)
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			if time.Since(start) > benchLimit {
				b.Fatalf("received %d of %d frames in %v", got, b.N, benchLimit)
			}
			r.sock.Wait(10 * time.Millisecond)
			continue
		}
		r.sock.Release(pkts[:n])
		got += n
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "pps")
}

// BenchmarkTransmit measures frames per second from Go onto the veth: the
// socket under test fills fresh frames with a UDP datagram for the far
// namespace and transmits them until the kernel has completed them all.
func BenchmarkTransmit(b *testing.B) {
	r := newRig(b, Config{})
	frame := r.udpFrame(b, 5353, 9, make([]byte, 18))
	pkts := make([]pktio.Packet, 64)
	rx0 := r.farRxPackets(b)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	sent := 0
	for sent < b.N {
		n := r.sock.Alloc(pkts[:min(len(pkts), b.N-sent)])
		if n == 0 {
			if err := r.sock.Flush(time.Second); err != nil {
				b.Fatal(err)
			}
			if time.Since(start) > benchLimit {
				b.Fatalf("sent %d of %d frames in %v", sent, b.N, benchLimit)
			}
			continue
		}
		for i := range pkts[:n] {
			pkts[i].Data = append(pkts[i].Data, frame...)
		}
		m, err := r.sock.Transmit(pkts[:n])
		if err != nil {
			b.Fatal(err)
		}
		r.sock.Release(pkts[m:n])
		sent += m
	}
	if err := r.sock.Flush(5 * time.Second); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	st, _ := r.sock.Stats()
	if st.TxCompleted != uint64(sent) {
		b.Fatalf("completed %d of %d", st.TxCompleted, sent)
	}
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "pps")
	// What the far end counted, to tell sent from delivered.
	b.ReportMetric(float64(r.farRxPackets(b)-rx0)/float64(sent), "delivered/op")
}

// BenchmarkReflect is the engine's shape of work: receive a SYN, rewrite
// it in place (here just the MAC addresses) and transmit it from the same
// frame. One op is one frame received and sent back.
func BenchmarkReflect(b *testing.B) {
	r := newRig(b, Config{})
	gen := r.openFar(b, Config{})
	frame := r.synFrame(b, 40000)

	defer floodFrames(gen, frame)()

	pkts := make([]pktio.Packet, 64)
	var mac [6]byte
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	reflected := 0
	for reflected < b.N {
		n, err := r.sock.Receive(pkts)
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			if time.Since(start) > benchLimit {
				b.Fatalf("reflected %d of %d frames in %v", reflected, b.N, benchLimit)
			}
			r.sock.Wait(10 * time.Millisecond)
			continue
		}
		for _, p := range pkts[:n] {
			copy(mac[:], p.Data[0:6])
			copy(p.Data[0:6], p.Data[6:12])
			copy(p.Data[6:12], mac[:])
		}
		m, err := r.sock.Transmit(pkts[:n])
		if err != nil {
			b.Fatal(err)
		}
		r.sock.Release(pkts[m:n])
		reflected += n
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(reflected)/elapsed.Seconds(), "pps")
}

// floodFrames transmits copies of frame from gen as fast as it can until
// the returned stop function is called.
func floodFrames(gen *Socket, frame []byte) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		pkts := make([]pktio.Packet, 64)
		for {
			select {
			case <-quit:
				return
			default:
			}
			n := gen.Alloc(pkts)
			for i := range pkts[:n] {
				pkts[i].Data = append(pkts[i].Data, frame...)
			}
			m, _ := gen.Transmit(pkts[:n])
			gen.Release(pkts[m:n])
		}
	}()
	return func() { close(quit); <-done }
}
