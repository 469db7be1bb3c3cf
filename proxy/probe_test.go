package proxy

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
)

// sysctl reads a Linux sysctl of the test's network namespace.
func sysctl(t *testing.T, name string) string {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if err != nil {
		t.Skipf("cannot read %s: %v", name, err)
	}
	return strings.TrimSpace(string(b))
}

func TestProbeBackendLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := ProbeBackend(ctx, netip.MustParseAddrPort(ln.Addr().String()), netip.MustParseAddr("127.0.0.1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Loopback's MTU is 65536: the MSS is 65536-40 = 65496 at most, and
	// far above an Ethernet MSS.
	if got.MSS < 16000 || got.MSS > 65496 {
		t.Errorf("MSS = %d, want loopback-sized", got.MSS)
	}
	wantTS := sysctl(t, "net.ipv4.tcp_timestamps") != "0"
	wantSACK := sysctl(t, "net.ipv4.tcp_sack") == "1"
	wantWS := sysctl(t, "net.ipv4.tcp_window_scaling") == "1"
	if got.Timestamps != wantTS || got.SACK != wantSACK || got.HasWScale() != wantWS {
		t.Errorf("probe = %+v; sysctls say ts %v sack %v wscale %v", got, wantTS, wantSACK, wantWS)
	}
	if wantWS && got.WScale > flow.MaxWScale {
		t.Errorf("window scale %d > 14", got.WScale)
	}
}

func TestProbeBackendRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ProbeBackend(ctx, addr, netip.Addr{}, nil); err == nil || !strings.Contains(err.Error(), "probe backend") {
		t.Errorf("err = %v, want a wrapped connection error", err)
	}
}

func TestParseTCPInfo(t *testing.T) {
	info := make([]byte, 104)
	info[5] = tcpiOptTimestamps | tcpiOptSACK | tcpiOptWScale
	info[6] = 0x97 // rcv_wscale 9, snd_wscale 7
	info[16] = 0xa8
	info[17] = 0x05 // snd_mss 1448
	got := parseTCPInfo(info)
	want := flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	info[5] = 0
	got = parseTCPInfo(info)
	if got.HasWScale() || got.SACK || got.Timestamps || got.MSS != 1448 {
		t.Errorf("no options: got %+v", got)
	}
}
