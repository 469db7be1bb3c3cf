package bpf

import (
	"os"
	"testing"
)

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: loading XDP programs needs root (CAP_BPF+CAP_NET_ADMIN); run as root")
	}
}

func TestLoad(t *testing.T) {
	requireRoot(t)
	d, err := Load(Config{DropBadFlags: true, DropSYNPayload: true, SYNRateLimit: RateLimit{PerSecond: 10}, LocalPorts: PortRange{40000, 50000}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
}
