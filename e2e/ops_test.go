package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syngate/syngate/control"
	"github.com/syngate/syngate/flood"
	"github.com/syngate/syngate/lab"
	"github.com/syngate/syngate/loadgen"
)

// opsCLI runs `syngate ARGS...` (the binary under test) against the
// control socket and returns its stdout.
func opsCLI(t *testing.T, socket string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(syngateBin, append(args, "-socket", socket)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("syngate %v: %v\n%s%s", args, err, out, stderr)
	}
	return out
}

// getFlows runs `syngate flows ARGS` (with -json) and keeps its flows in
// *flows; the total must be what was listed (no limit is reached here).
func getFlows(t *testing.T, socket string, flows *[]control.Flow, args ...string) error {
	t.Helper()
	var list control.FlowList
	if err := json.Unmarshal(opsCLI(t, socket, append([]string{"flows"}, args...)...), &list); err != nil {
		return err
	}
	if list.Total != len(list.Flows) {
		return fmt.Errorf("total %d, %d flows listed", list.Total, len(list.Flows))
	}
	*flows = list.Flows
	return nil
}

// TestStatusAndFlows opens real connections through a running gateway and
// checks that `syngate flows` and `syngate status` (the real binary, over
// the control socket) report exactly those connections: both legs as the
// client and the backend saw them, bytes at least what was sent each way,
// the state after a close, and the backend's health.
func TestStatusAndFlows(t *testing.T) {
	lab.RequireRoot(t)
	top, err := lab.NewTopology(t, lab.Options{Prefix: "sgo-"})
	if err != nil {
		t.Fatal(err)
	}

	// The backend echoes and remembers the peer address of every
	// connection: syngate's source address and port of the backend leg.
	ln, err := listen(top.Backend, netip.AddrPortFrom(netip.IPv6Unspecified(), backendPort))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	peers := map[netip.AddrPort]bool{}
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			peers[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	// Started after the backend, so that its first probe succeeds.
	socket := filepath.Join(t.TempDir(), "control.sock")
	g := startSyngate(t, top, labOptions{extra: fmt.Sprintf("control:\n  socket: %s\n", socket)})

	const nConns, payload = 3, 3000
	vip := netip.AddrPortFrom(top.VIP4, servicePort)
	var conns []net.Conn
	clients := map[string]bool{}
	for range nConns {
		c, err := dial(top.Client, vip, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := make([]byte, payload)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		clients[c.LocalAddr().String()] = true
	}
	if got := g.waitMetric(`syngate_connections_spliced_total{service="web"}`, nConns, 5*time.Second); got != nConns {
		t.Fatalf("spliced = %v, want %d", got, nConns)
	}

	var flows []control.Flow
	if err := getFlows(t, socket, &flows, "-json"); err != nil {
		t.Fatal(err)
	}
	if len(flows) != nConns {
		t.Fatalf("flows: %d, want %d: %+v", len(flows), nConns, flows)
	}
	backend := netip.AddrPortFrom(backendAddr(top), backendPort).String()
	mu.Lock()
	for _, f := range flows {
		src, err := netip.ParseAddrPort(f.Source)
		switch {
		case f.Service != "web" || f.Listen != vip.String() || f.Backend != backend:
			t.Errorf("flow %+v: want service web, listen %s, backend %s", f, vip, backend)
		case !clients[f.Client]:
			t.Errorf("flow client %s is none of the clients' addresses %v", f.Client, clients)
		case err != nil || !peers[src]:
			t.Errorf("flow source %s is none of the peers the backend saw %v", f.Source, peers)
		case f.State != "established":
			t.Errorf("flow %s: state %s", f.Client, f.State)
		case f.ToBackend.Bytes < payload || f.ToClient.Bytes < payload || f.ToBackend.Packets < 2 || f.ToClient.Packets < 2:
			// The first data segment may have been held and sent by the
			// engine; the echo's ACK and reply went over XDP.
			t.Logf("flow %s counters: to backend %+v, to client %+v", f.Client, f.ToBackend, f.ToClient)
			if f.ToClient.Bytes < payload {
				t.Errorf("flow %s: %d bytes to the client, want at least the %d echoed", f.Client, f.ToClient.Bytes, payload)
			}
		case f.Created.IsZero() || f.Spliced.Before(f.Created) || time.Since(f.Created) > time.Minute:
			t.Errorf("flow %s: created %v spliced %v", f.Client, f.Created, f.Spliced)
		}
	}
	mu.Unlock()

	// An IPv6 connection to the web6 service shows with bracketed
	// addresses and is selected by its service and its client address.
	vip6 := netip.AddrPortFrom(top.VIP6, servicePort)
	c6, err := dial(top.Client, vip6, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c6.Close()
	c6.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c6.Write([]byte("v6")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c6, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	g.waitMetric(`syngate_connections_spliced_total{service="web6"}`, 1, 5*time.Second)
	client6 := c6.LocalAddr().(*net.TCPAddr).AddrPort()
	if err := getFlows(t, socket, &flows, "-json", "-client", client6.Addr().String()); err != nil || len(flows) != 1 {
		t.Fatalf("flows -client %s: %+v %v", client6.Addr(), flows, err)
	}
	if f := flows[0]; f.Service != "web6" || f.Client != client6.String() || f.Listen != vip6.String() ||
		f.Backend != netip.AddrPortFrom(top.BackendIf.V6.Addr(), backendPort).String() || f.State != "established" {
		t.Errorf("v6 flow: %+v", f)
	}
	if err := getFlows(t, socket, &flows, "-json", "-service", "web6"); err != nil || len(flows) != 1 {
		t.Errorf("flows -service web6: %+v %v", flows, err)
	}

	// Filters, by client address and port, by service, by backend.
	one := conns[0].LocalAddr().String()
	if err := getFlows(t, socket, &flows, "-json", "-client", one); err != nil || len(flows) != 1 || flows[0].Client != one {
		t.Errorf("flows -client %s: %+v %v", one, flows, err)
	}
	if err := getFlows(t, socket, &flows, "-json", "-service", "web"); err != nil || len(flows) != nConns {
		t.Errorf("flows -service web: %d flows %v", len(flows), err)
	}
	if err := getFlows(t, socket, &flows, "-json", "-backend", backendAddr(top).String()); err != nil || len(flows) != nConns {
		t.Errorf("flows -backend: %d flows %v", len(flows), err)
	}
	var limited control.FlowList
	if err := json.Unmarshal(opsCLI(t, socket, "flows", "-json", "-limit", "2"), &limited); err != nil || len(limited.Flows) != 2 || limited.Total != nConns+1 {
		t.Errorf("flows -limit 2: %d listed of %d, %v", len(limited.Flows), limited.Total, err)
	}

	var st control.Status
	if err := json.Unmarshal(opsCLI(t, socket, "status", "-json", "-interval", "500ms"), &st); err != nil {
		t.Fatal(err)
	}
	var web *control.Service
	for i := range st.Services {
		if st.Services[i].Name == "web" {
			web = &st.Services[i]
		}
	}
	switch {
	case web == nil || len(st.Services) != 2:
		t.Fatalf("status services: %+v", st.Services)
	case web.Conns.Spliced != nConns || web.Counters.Spliced != nConns || st.FlowTable.Entries != 2*(nConns+1):
		t.Errorf("status web: conns %+v counters %+v table %+v", web.Conns, web.Counters, st.FlowTable)
	case web.CookiePolicy != "auto" || web.CookieMode != "queue" || web.Queues.AcceptLimit != 1024:
		t.Errorf("status web: cookies %s/%s queues %+v", web.CookiePolicy, web.CookieMode, web.Queues)
	case len(web.Backends) != 1 || web.Backends[0].Health != "ok" || web.Backends[0].Learned == nil || web.Backends[0].Connects != nConns:
		t.Errorf("status web backends: %+v", web.Backends)
	case st.Rates == nil || len(st.Interfaces) == 0 || st.Interfaces[0].Datapath != "tc" || st.Interfaces[0].XDPMode != "detached":
		// veth: the TC data path, no XDP program, no AF_XDP socket.
		t.Errorf("status: rates %+v interfaces %+v", st.Rates, st.Interfaces)
	}

	t.Logf("syngate status:\n%s", opsCLI(t, socket, "status"))
	t.Logf("syngate flows:\n%s", opsCLI(t, socket, "flows"))

	// Close one connection from the client: its flow shows the FINs.
	conns[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := getFlows(t, socket, &flows, "-json", "-client", one); err != nil {
			t.Fatal(err)
		}
		if len(flows) == 1 && flows[0].State == "closed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after close: %+v, want one flow in state closed", flows)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("syngate flows after one close:\n%s", opsCLI(t, socket, "flows"))

	// The backend goes away: the next client's backend leg is refused, and
	// status names the failure.
	ln.Close()
	if c, err := dial(top.Client, vip, 5*time.Second); err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1)) // the RST syngate sends once the backend refused
		c.Close()
	}
	g.waitMetric(`syngate_backend_failures_total{reason="refused",service="web"}`, 1, 5*time.Second)
	if err := json.Unmarshal(opsCLI(t, socket, "status", "-json", "-interval", "0"), &st); err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Services {
		if s.Name != "web" {
			continue
		}
		b := s.Backends[0]
		if s.Counters.BackendFailures["refused"] != 1 || b.LastLegFailureReason != "refused" || time.Since(b.LastLegFailure) > time.Minute {
			t.Errorf("after a refused backend leg: failures %v, last %s at %v", s.Counters.BackendFailures, b.LastLegFailureReason, b.LastLegFailure)
		}
	}
	t.Logf("syngate status after a refused backend leg:\n%s", opsCLI(t, socket, "status", "-interval", "0"))
}

// TestStatusUnderFlood runs a bounded spoofed SYN flood against a service
// with cookies: auto and checks what `syngate status` says while it lasts:
// the service in cookie mode, XDP minting cookie SYN-ACKs at the flood's
// rate. Then it checks that every metric the dashboard and the alert rules
// name is in the live daemon's /metrics.
func TestStatusUnderFlood(t *testing.T) {
	lab.RequireRoot(t)
	// The flood generator only runs from namespaces named "sg-...".
	top, err := lab.NewTopology(t, lab.Options{Prefix: "sg-ops-"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := loadgen.Serve(top.Backend, netip.AddrPortFrom(backendAddr(top), backendPort), loadgen.HTTPishHandler)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	socket := filepath.Join(t.TempDir(), "control.sock")
	g := startSyngate(t, top, labOptions{cookies: "auto", extra: fmt.Sprintf("control:\n  socket: %s\n", socket)})
	vip := netip.AddrPortFrom(top.VIP4, servicePort)

	// A few real connections first, so the connect-time histogram and the
	// flow counters have something in them.
	for range 3 {
		c, err := dial(top.Client, vip, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const rate = 40000
	fl, err := flood.Start(ctx, flood.Config{From: top.Client, Target: vip, Rate: rate, Packets: 200000, Duration: 4 * time.Second, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the SYN queue fills and the offload turns on
	var st control.Status
	out := opsCLI(t, socket, "status", "-json", "-interval", "1s")
	table := opsCLI(t, socket, "status", "-interval", "1s")
	fr, err := fl.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flood: %v\nsyngate status during the flood:\n%s", fr, table)
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	var web *control.Service
	for i := range st.Services {
		if st.Services[i].Name == "web" {
			web = &st.Services[i]
		}
	}
	if web == nil || st.Rates == nil {
		t.Fatalf("status: %s", out)
	}
	if web.CookieMode != "cookies" {
		t.Errorf("web cookie mode under flood: %s (queues %+v)", web.CookieMode, web.Queues)
	}
	// Paced at 40k/s; on a loaded 2-core machine the generator reaches
	// less, so the bound is loose.
	if got := st.Rates.XDP["tx_synack_cookie"]; got < rate/10 {
		t.Errorf("status: %.0f cookie SYN-ACKs/s in XDP during a %d/s flood", got, rate)
	}

	body, err := top.Gateway.HTTPGet(netip.MustParseAddrPort("127.0.0.1:9420"), "/metrics", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	exposed := map[string]bool{}
	for _, l := range strings.Split(string(body), "\n") {
		if name, _, ok := strings.Cut(l, "{"); ok && !strings.HasPrefix(l, "#") {
			exposed[name] = true
		} else if name, _, ok := strings.Cut(l, " "); ok && !strings.HasPrefix(l, "#") {
			exposed[name] = true
		}
	}
	metricName := regexp.MustCompile(`syngate_[a-z0-9_]+`)
	for _, f := range []string{"../observability/syngate-dashboard.json", "../observability/syngate-alerts.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range metricName.FindAllString(string(b), -1) {
			// The lab's veths are on the TC data path: no AF_XDP socket.
			if !exposed[name] && !strings.HasPrefix(name, "syngate_afxdp_") {
				t.Errorf("%s names %s, which the running daemon does not expose", f, name)
			}
		}
	}
	for _, want := range []string{`syngate_backend_connect_seconds_count{service="web"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if got := g.metrics()[`syngate_connections_spliced_total{service="web"}`]; got < 3 {
		t.Errorf("spliced %v, want the 3 connections made before the flood", got)
	}
}
