package proxy

import (
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNewNetns moves the test goroutine, locked to its thread for good, into
// a fresh network namespace with its loopback up: sysctls written there
// touch nothing else. The thread is discarded when the test ends.
func inNewNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root for a network namespace and raw sockets")
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("loopback up: %v", err)
	}
}

// The probe sees what the backend's tcp_ecn says: Linux answers an
// ECN-setup SYN with ECE unless tcp_ecn is 0.
func TestProbeECN(t *testing.T) {
	inNewNetns(t)
	for _, addr := range []string{"127.0.0.1", "::1"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		backend := netip.MustParseAddrPort(ln.Addr().String())
		for _, tc := range []struct {
			sysctl string
			want   bool
		}{{"2", true}, {"0", false}, {"1", true}} {
			if err := os.WriteFile("/proc/sys/net/ipv4/tcp_ecn", []byte(tc.sysctl), 0); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			got, err := ProbeECN(ctx, backend, backend.Addr())
			cancel()
			if err != nil {
				t.Fatalf("%s tcp_ecn=%s: %v", addr, tc.sysctl, err)
			}
			if got != tc.want {
				t.Errorf("%s tcp_ecn=%s: ECN %v, want %v", addr, tc.sysctl, got, tc.want)
			}
		}
	}
	// Nobody listening: refused, not "no ECN".
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := ProbeECN(ctx, netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddr("127.0.0.1")); err == nil {
		t.Error("probe of a closed port succeeded")
	}
}
