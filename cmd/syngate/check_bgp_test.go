package main

import (
	"strings"
	"testing"
)

func TestCheckPrintsBGP(t *testing.T) {
	out, stderr, code := runCLI("check", "-c", "testdata/bgp.yaml")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	for _, want := range []string{
		"bgp: AS 65010, router ID 10.0.0.1, graceful restart 2m0s",
		"announce 192.0.2.10/32 while a service on it has a healthy backend",
		"peer 10.0.0.254 AS 65000 port 179, hold 9s keepalive 3s, TCP MD5 (gets the IPv4 VIPs)",
		"peer cookies: up to 10000 ACKs/s",
		"receive queues of eth0 pinned to cpus [0 1]",
		"peers [10.0.0.2 10.0.0.3]: segments of connections this gateway does not know are handed to them",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "announce 192.0.2.10/32") != 1 {
		t.Errorf("a VIP shared by two services is announced once:\n%s", out)
	}
	// Invalid bgp sections fail check with the line.
	_, stderr, code = runCLI("check", "-c", "testdata/bad.yaml")
	if code != 1 {
		t.Errorf("bad.yaml: code %d", code)
	}
}

func TestDrainUsage(t *testing.T) {
	_, stderr, code := runCLI("drain")
	if code != 2 || !strings.Contains(stderr, "-pid or -pid-file is required") {
		t.Errorf("code %d stderr %q", code, stderr)
	}
}
