package ringport

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
	"github.com/syngate/syngate/pktio"
)

// TestPortTransmit opens a port on one end of a veth in a lab namespace:
// its empty ring gives nothing and Wait times out; frames built in Alloc'd
// frames arrive whole at the other end; frames go back to the port on
// Transmit and Release, and one outside its frame is refused.
func TestPortTransmit(t *testing.T) {
	lab.RequireRoot(t)
	a, err := lab.Create("sgt2-rp-")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := lab.Create("sgt2-rp-")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := lab.VethWith(a, "r0", b, "r1", lab.VethOptions{}); err != nil {
		t.Fatal(err)
	}
	ring, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	var p *Port
	if err := a.Run(func() (err error) { p, err = Open(ring, "r0", Config{Frames: 4, FrameSize: 2048}); return err }); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var rx int
	if err := b.Run(func() error {
		ifi, err := net.InterfaceByName("r1")
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		rx, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		return unix.Bind(rx, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rx)
	unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})

	pkts := make([]pktio.Packet, 8)
	if n, err := p.Receive(pkts); n != 0 || err != nil {
		t.Fatalf("empty ring: %d, %v", n, err)
	}
	if ok, err := p.Wait(20 * time.Millisecond); ok || err != nil {
		t.Fatalf("wait on an empty ring: %v, %v", ok, err)
	}

	if n := p.Alloc(pkts); n != 4 {
		t.Fatalf("alloc gave %d frames of 4", n)
	}
	frame := append(bytes.Repeat([]byte{0xff}, 6), 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5)
	frame = append(frame, bytes.Repeat([]byte("ringport"), 20)...)
	pkts[0].Data = append(pkts[0].Data[:0], frame...)
	if n, err := p.Transmit(pkts[:1]); n != 1 || err != nil {
		t.Fatalf("transmit: %d, %v", n, err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(rx, buf)
		if err != nil {
			t.Fatalf("the frame did not arrive: %v", err)
		}
		if bytes.Equal(buf[:n], frame) {
			break
		}
	}

	// A Data that no longer lies in its frame is refused, and stays ours.
	pkts[1].Data = make([]byte, 60)
	if n, err := p.Transmit(pkts[1:2]); n != 0 || !errors.Is(err, pktio.ErrFrame) {
		t.Fatalf("transmit of a foreign slice: %d, %v", n, err)
	}
	p.Release(pkts[2:4])
	if n := p.Alloc(pkts[4:8]); n != 3 {
		t.Fatalf("after one sent and two released: %d frames free, want 3", n)
	}
	if st := p.Stats(); st.Transmitted != 1 || st.TxErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
