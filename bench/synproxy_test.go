package main

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syngate/syngate/lab"
)

// TestSynproxyRules: with the benchmark's nftables synproxy recipe on the
// gateway, a client reaches the service behind it, and the handshake was
// the synproxy's (its cookie_valid counter moved), not a forwarded one.
func TestSynproxyRules(t *testing.T) {
	lab.RequireRoot(t)
	top, err := lab.NewTopology(t, lab.Options{Prefix: "sgf-bench-"})
	if err != nil {
		t.Fatal(err)
	}
	// As routeVIPToBackend: the backend owns the VIP, the gateway routes.
	vip := netip.PrefixFrom(top.VIP4, 32)
	if err := top.Gateway.DelAddr("lo", vip); err != nil {
		t.Fatal(err)
	}
	if err := top.Gateway.AddRoute(vip, top.BackendIf.V4.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := top.Backend.AddAddr("lo", vip); err != nil {
		t.Fatal(err)
	}
	ws, err := windowScale(top.Backend)
	if err != nil {
		t.Fatal(err)
	}
	if err := synproxyRules(top.Gateway, top.VIP4, ws); err != nil {
		t.Fatal(err)
	}
	if err := top.Gateway.Sysctl("net.netfilter.nf_conntrack_tcp_loose", "0"); err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	err = top.Backend.Run(func() (err error) {
		l, err = net.Listen("tcp", netip.AddrPortFrom(top.VIP4, servicePort).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	before := synproxyCookiesValid(t, top.Gateway)
	const conns = 5
	for i := range conns {
		err := top.Client.Run(func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(top.VIP4, servicePort).String(), 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write([]byte("hello")); err != nil {
				return err
			}
			_, err = io.ReadFull(c, make([]byte, 5))
			return err
		})
		if err != nil {
			t.Fatalf("connection %d through synproxy: %v", i, err)
		}
	}
	t.Logf("synproxy cookie_valid %d -> %d", before, synproxyCookiesValid(t, top.Gateway))
	if got := synproxyCookiesValid(t, top.Gateway) - before; got < conns {
		t.Errorf("synproxy validated %d cookies for %d connections: the handshakes did not go through it", got, conns)
	}
}

// synproxyCookiesValid sums the per-CPU cookie_valid column of
// /proc/net/stat/synproxy in ns.
func synproxyCookiesValid(t *testing.T, ns *lab.NS) uint64 {
	t.Helper()
	s, err := ns.ReadFile("/proc/net/stat/synproxy")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(s, "\n")
	col := -1
	for i, name := range strings.Fields(lines[0]) {
		if name == "cookie_valid" {
			col = i
		}
	}
	if col < 0 {
		t.Fatalf("no cookie_valid in %q", lines[0])
	}
	var sum uint64
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) <= col {
			continue
		}
		v, err := strconv.ParseUint(f[col], 16, 64)
		if err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		sum += v
	}
	return sum
}
