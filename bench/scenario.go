package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/syngate/syngate/flood"
	"github.com/syngate/syngate/lab"
)

// Ports of the service: clients and the flood always go to VIP:servicePort;
// a proxying defense (syngate, HAProxy) forwards to backend:backendPort,
// a routed one (none, kernel cookies, synproxy) lets the backend own the
// VIP and listen on servicePort itself.
const (
	servicePort = 80
	backendPort = 8080
)

// scenario is one fresh lab with one defense in it. Every scenario gets
// the same topology (lab.BuildTopology, routed, offloads off because
// syngate's fast path forwards frames as they are) and the same extra
// plumbing, so the defenses differ only in what they are.
type scenario struct {
	top     *lab.Topology
	dir     string       // logs and configs of this scenario
	synacks *counterProg // SYN-ACK counter on the client's interface
	target  netip.AddrPort
	proc    *lab.Daemon // the defense's daemon, nil for kernel defenses
	closers []func()
}

// newScenario builds the lab, its links with queues receive and transmit
// queues (0: one). The caller must call close.
func newScenario(workDir, name string, queues int) (_ *scenario, err error) {
	s := &scenario{target: netip.AddrPortFrom(lab.VIP4, servicePort)}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.dir = filepath.Join(workDir, name)
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create scenario dir: %w", err)
	}
	// The flood only sends from namespaces whose name starts with the
	// lab's prefix.
	top, err := lab.BuildTopology(lab.Options{Prefix: flood.LabPrefix + "bench-", NoOffloads: true, Queues: queues})
	if err != nil {
		return nil, fmt.Errorf("build lab: %w", err)
	}
	s.top = top
	s.closers = append(s.closers, func() { top.Close() })

	// The client side counts SYN-ACKs as they arrive (the XDP program also
	// makes the veth accept frames the gateway sends with XDP_TX); the
	// backend side gets XDP_PASS so both veths of the gateway work in the
	// same (NAPI) mode for every defense, not only for syngate.
	if s.synacks, err = newCounterProg(progCountPass); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.synacks.Close() })
	if err := s.synacks.attach(top.Client, top.ClientIf.Name); err != nil {
		return nil, err
	}
	if err := lab.AttachXDPPass(top.Backend, top.BackendIf.Name); err != nil {
		return nil, err
	}
	// SYN-ACKs to spoofed sources go back toward the client side, as they
	// would go to the internet; the client's kernel drops them (not its
	// addresses, forwarding off), after the counter saw them.
	if err := top.Gateway.AddRoute(netip.MustParsePrefix(flood.SpoofV4), top.ClientIf.V4.Addr()); err != nil {
		return nil, err
	}
	// The same listen-path limits everywhere a kernel listens, matching
	// syngate's defaults (max_syn_backlog 4096, somaxconn 4096); legitimate
	// clients may reuse TIME_WAIT ports so a few seconds of thousands of
	// connections per second do not run out of them.
	// tcp_no_metrics_save: every legitimate client of the lab shares one
	// address, which after the first connections the kernel would treat
	// as a "proven" peer and let past a full SYN queue (without cookies);
	// real floods hit mostly new clients, so no peer is proven here.
	for _, ns := range []*lab.NS{top.Gateway, top.Backend} {
		for k, v := range map[string]string{
			"net.core.somaxconn":           "4096",
			"net.ipv4.tcp_max_syn_backlog": "4096",
			"net.ipv4.tcp_no_metrics_save": "1",
		} {
			if err := ns.Sysctl(k, v); err != nil {
				return nil, err
			}
		}
	}
	for k, v := range map[string]string{
		"net.ipv4.ip_local_port_range": "1024 65535",
		"net.ipv4.tcp_tw_reuse":        "1",
	} {
		if err := top.Client.Sysctl(k, v); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// routeVIPToBackend moves the VIP from the gateway to the backend and
// routes it there: the gateway becomes a plain router for the service.
func (s *scenario) routeVIPToBackend() error {
	vip := netip.PrefixFrom(s.top.VIP4, 32)
	if err := s.top.Gateway.DelAddr("lo", vip); err != nil {
		return err
	}
	if err := s.top.Gateway.AddRoute(vip, s.top.BackendIf.V4.Addr()); err != nil {
		return err
	}
	return s.top.Backend.AddAddr("lo", netip.PrefixFrom(s.top.VIP4, 32))
}

// close stops what the scenario started and deletes its namespaces.
func (s *scenario) close() {
	if s.proc != nil {
		s.proc.Stop(10 * time.Second)
		s.proc = nil
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// defenseCPU is the CPU time of the defense's daemon, zero without one.
func (s *scenario) defenseCPU() time.Duration {
	if s.proc == nil {
		return 0
	}
	t, err := procCPU(s.proc.PID())
	if err != nil {
		return 0
	}
	return t
}

// checkAlive fails when the defense's daemon died.
func (s *scenario) checkAlive(ctx context.Context) error {
	if s.proc == nil {
		return ctx.Err()
	}
	if err := s.proc.Alive(); err != nil {
		return err
	}
	return ctx.Err()
}

// joinLines is strings.Join with newlines, for configs.
func joinLines(l ...string) string { return strings.Join(l, "\n") + "\n" }
