package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/syngate/syngate/control"
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
	if !strings.Contains(out, "announce 2001:db8::10/128 while a service on it has a healthy backend\n    warning: no IPv6 peer, so no router learns this route") {
		t.Errorf("an IPv6 VIP without an IPv6 peer is not flagged:\n%s", out)
	}
	if strings.Count(out, "warning: no") != 1 {
		t.Errorf("only the IPv6 VIP lacks a peer of its family:\n%s", out)
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

// TestDrainNoDaemon: without a daemon on the socket, drain fails and
// names the signal fallback.
func TestDrainNoDaemon(t *testing.T) {
	_, stderr, code := runCLI("drain", "-socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(stderr, "-pid sends the drain signal instead") {
		t.Errorf("code %d stderr %q", code, stderr)
	}
}

// TestDrainOverControl: drain asks once over the control socket (POST),
// then follows the open connections (GET) until none is left.
func TestDrainOverControl(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	srv, err := control.Serve(control.Options{Path: path, Mode: 0o600}, noSource{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var posts, gets atomic.Int32
	reply := func(w http.ResponseWriter, d control.Drain) { json.NewEncoder(w).Encode(d) }
	srv.Handle("POST /v1/drain", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		posts.Add(1)
		reply(w, control.Drain{Draining: true, Open: 2})
	}))
	srv.Handle("GET /v1/drain", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		open := max(0, 2-int(gets.Add(1))) // 1, then 0
		reply(w, control.Drain{Draining: posts.Load() > 0, Open: open})
	}))
	out, stderr, code := runCLI("drain", "-socket", path, "-deadline", "30s")
	if code != 0 || !strings.Contains(out, "drain: 1 connections open") || !strings.Contains(out, "drain: done") {
		t.Fatalf("code %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	if posts.Load() != 1 || gets.Load() != 2 {
		t.Errorf("%d POSTs, %d GETs; want 1, 2", posts.Load(), gets.Load())
	}
}

type noSource struct{}

func (noSource) Status() control.Status                                    { return control.Status{} }
func (noSource) Flows(control.Filter, int, func(control.Flow)) (total int) { return 0 }
