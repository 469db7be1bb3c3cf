package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/syngate/syngate/lab"
)

// TestSecondInstanceAndReset: a second syngate on the same pin directory
// fails without touching the running one's maps; `syngate reset` refuses
// while one runs, and afterwards detaches and removes everything, so the
// VIP is the kernel's again.
func TestSecondInstanceAndReset(t *testing.T) {
	lab.RequireRoot(t)
	top, err := lab.NewTopology(t, lab.Options{Prefix: "sgl-"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pins := privateBPFFS(t, dir)
	newRecordingEcho(t, top)

	r := &restarter{t: t, root: t, top: top, dir: dir}
	r.start(syngateBin, restartConfig(t, top, dir, pins, false, 0, ""))
	t.Cleanup(func() { r.cur.stop() })
	vip := netip.AddrPortFrom(top.VIP4, servicePort)
	if err := shortEcho(top.Client, vip, 1); err != nil {
		t.Fatalf("first instance: %v", err)
	}

	// The second one adds a service on port 81; it must fail before
	// writing it anywhere.
	cfg2 := filepath.Join(dir, "second.yaml")
	b, err := os.ReadFile(filepath.Join(dir, "syngate-false-0.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("  - name: web81\n    listen: %s\n    backend: %s\n",
		netip.AddrPortFrom(top.VIP4, 81), netip.AddrPortFrom(backendAddr(top), backendPort))
	if err := os.WriteFile(cfg2, append(b, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
	d2, err := lab.StartDaemon(top.Gateway, filepath.Join(dir, "second.log"), syngateBin, "run", "-c", cfg2,
		"-ready-file", filepath.Join(dir, "ready-second"))
	if err != nil {
		t.Fatal(err)
	}
	err = d2.WaitFile(filepath.Join(dir, "ready-second"), 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "in use by another syngate") {
		d2.Stop(5 * time.Second)
		t.Fatalf("second instance: %v, want an exit naming the lock", err)
	}
	if n := pinnedEntries(t, filepath.Join(pins, "services")); n != 2 {
		t.Errorf("services map has %d entries after the failed second instance, want the first's 2", n)
	}
	if _, err := dial(top.Client, netip.AddrPortFrom(top.VIP4, 81), 3*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("port 81 after the failed second instance: %v, want refused by the kernel", err)
	}
	if err := shortEcho(top.Client, vip, 2); err != nil {
		t.Errorf("first instance after the second failed: %v", err)
	}

	if out, err := exec.Command(syngateBin, "reset", "-bpffs", pins).CombinedOutput(); err == nil || !strings.Contains(string(out), "in use by another syngate") {
		t.Errorf("reset while running: %v: %s", err, out)
	}
	if err := r.cur.d.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pins, "tclink_"+top.GatewayClient.Name)); err != nil { // the TC data path (veth)
		t.Fatalf("after SIGTERM the link is no longer pinned: %v", err)
	}
	out, err := exec.Command(syngateBin, "reset", "-bpffs", pins).CombinedOutput()
	if err != nil {
		t.Fatalf("reset: %v: %s", err, out)
	}
	if _, err := os.Stat(pins); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory after reset: %v", err)
	}
	// Detached: the gateway's kernel answers the VIP (no listener there).
	if _, err := dial(top.Client, vip, 3*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("VIP after reset: %v, want refused by the gateway's kernel", err)
	}
}

// pinnedEntries counts the entries of a pinned hash map.
func pinnedEntries(t *testing.T, path string) int {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer m.Close()
	var (
		k, v []byte
		n    int
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterate %s: %v", path, err)
	}
	return n
}

// TestServerFirstAcrossRestart: a client that connects while no syngate
// runs gets its SYN-ACK from the program's standby cookies; its ACK is
// kept, and the next syngate opens the connection from it, so a protocol
// where the server speaks first (the client sends nothing) works too.
func TestServerFirstAcrossRestart(t *testing.T) {
	lab.RequireRoot(t)
	top, err := lab.NewTopology(t, lab.Options{Prefix: "sgl-"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pins := privateBPFFS(t, dir)

	ln, err := listen(top.Backend, netip.AddrPortFrom(netip.IPv6Unspecified(), backendPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "220 banner\n")
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				c.Read(make([]byte, 1))
			}()
		}
	}()

	cfg := restartConfig(t, top, dir, pins, false, 0, "")
	r := &restarter{t: t, root: t, top: top, dir: dir}
	r.start(syngateBin, cfg)
	syscall.Kill(r.cur.d.PID(), syscall.SIGKILL)
	r.cur.d.Stop(5 * time.Second)

	vip := netip.AddrPortFrom(top.VIP4, servicePort)
	c, err := dial(top.Client, vip, 3*time.Second)
	if err != nil {
		t.Fatalf("connect with no syngate running: %v (standby cookies should answer)", err)
	}
	defer c.Close()
	time.Sleep(500 * time.Millisecond) // the ACK is long gone when the next one starts

	r.start(syngateBin, cfg)
	t.Cleanup(func() { r.cur.stop() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "220 banner\n" {
		t.Fatalf("banner after the restart: %q, %v", line, err)
	}
	if !strings.Contains(r.cur.d.Logs(), "handshake ACKs kept while no engine ran") {
		t.Error("the new syngate did not report the kept ACK")
	}
}
