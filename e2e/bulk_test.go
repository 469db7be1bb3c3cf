package e2e

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// echoBulk streams n pseudo-random bytes to the echo backend through the
// VIP while reading the echo, and compares the SHA-256 of what was sent with
// what came back: n bytes in each direction, checked end to end.
func echoBulk(g *gatewayRun, n int64, seed uint64, timeout time.Duration) error {
	c, err := dial(g.top.Client, netip.AddrPortFrom(g.top.VIP4, servicePort), 5*time.Second)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	return echoOver(c, n, seed, timeout)
}

// echoOver is echoBulk on an open connection.
func echoOver(c net.Conn, n int64, seed uint64, timeout time.Duration) error {
	return echoOverFrom(c, n, seed, timeout, io.Copy)
}

// echoOverFrom is echoOver writing with send (e.g. a paced copy).
func echoOverFrom(c net.Conn, n int64, seed uint64, timeout time.Duration, send func(io.Writer, io.Reader) (int64, error)) error {
	c.SetDeadline(time.Now().Add(timeout))
	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		src := io.LimitReader(rand.NewChaCha8(seedBytes(seed)), n)
		_, err := send(c, io.TeeReader(src, sent))
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	got := sha256.New()
	m, err := io.Copy(got, c)
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", m, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if m != n {
		return fmt.Errorf("echoed %d bytes, sent %d", m, n)
	}
	if string(got.Sum(nil)) != string(sent.Sum(nil)) {
		return fmt.Errorf("echo of %d bytes differs from what was sent", n)
	}
	return nil
}

func seedBytes(seed uint64) [32]byte {
	var b [32]byte
	for i := range 8 {
		b[i] = byte(seed >> (8 * i))
	}
	return b
}

func TestBulk64MiB(t *testing.T) {
	forLinkModes(t, testBulk64MiB)
}

func testBulk64MiB(t *testing.T, mode linkMode) {
	for _, oneArm := range []bool{false, true} {
		name := map[bool]string{false: "routed", true: "one-arm"}[oneArm]
		t.Run(name, func(t *testing.T) {
			o := labOptions{oneArm: oneArm, offloadsOff: !mode.offloads}
			top := newLab(t, o)
			echoServer(t, top)
			g := startSyngate(t, top, o)
			start := time.Now()
			if err := echoBulk(g, 64<<20, 1, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
			el := time.Since(start)
			m := g.metrics()
			fast := m[`syngate_fastpath_packets_total`]
			slow := m[`syngate_slowpath_packets_total{service="web"}`]
			t.Logf("64 MiB each way in %v (%.0f MB/s per direction); fast path %v packets, slow path %v",
				el.Round(time.Millisecond), 64*1.048576/el.Seconds(), fast, slow)
			if fast < 2*(64<<20)/65536 {
				t.Errorf("fast path carried %v packets: the data did not go through XDP", fast)
			}
			if slow > fast/1000+10 {
				t.Errorf("slow path packets %v vs fast %v: spliced data reached user space", slow, fast)
			}
			g.checkInWindow()
			checkDatapath(t, m, mode)
		})
	}
}

// TestManyConnections holds 1,000 connections open at once, then moves a
// different amount of data over each, all at the same time, each checking
// its own echo.
func TestManyConnections(t *testing.T) {
	o := labOptions{cookies: "auto", backlog: 4096}
	top := newLab(t, o)
	echoServer(t, top)
	g := startSyngate(t, top, o)
	const conns = 1000
	open := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	vip := netip.AddrPortFrom(top.VIP4, servicePort)
	for i := range conns {
		c, err := dial(top.Client, vip, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		open = append(open, c)
	}
	if got := g.waitMetric(`syngate_connections_spliced_total{service="web"}`, conns, 5*time.Second); got != conns {
		t.Errorf("spliced with all connections open = %v, want %d", got, conns)
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, c := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echoOver(c, int64(1000+i*37), uint64(i), time.Minute); err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed < 5 {
			t.Error(err)
		}
		failed++
	}
	if failed > 0 {
		t.Fatalf("%d of %d connections failed", failed, conns)
	}
	g.checkInWindow()
}
