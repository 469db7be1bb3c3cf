package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
)

// defense is one of the five setups compared. setup configures a fresh
// scenario (namespaces, sysctls, rules, daemon, backend server) so that a
// client in the client namespace reaches the service at s.target.
type defense struct {
	key   string // short name used in JSON and flags
	name  string // human name for tables
	how   string // one line on how it is set up
	setup func(ctx context.Context, b *bench, s *scenario) error
}

var defenses = []defense{
	{
		key:  "syngate",
		name: "syngate",
		how:  "syngate run in the gateway namespace, VIP:80 -> backend:8080, cookies auto, defaults otherwise",
		setup: func(ctx context.Context, b *bench, s *scenario) error {
			return setupSyngate(ctx, b, s)
		},
	},
	{
		key:  "kernel",
		name: "kernel SYN cookies",
		how:  "gateway routes the VIP to the backend, which owns it and listens on it; backend tcp_syncookies=1",
		setup: func(ctx context.Context, b *bench, s *scenario) error {
			return setupRouted(b, s, "1")
		},
	},
	{
		key:  "synproxy",
		name: "nftables synproxy",
		how:  "as kernel, plus in the gateway: notrack for SYNs to the VIP, `ct state invalid,untracked synproxy mss 1460 wscale <backend's> timestamp sack-perm` in forward, tcp_loose=0, conntrack TIME_WAIT 1 s (one client address reuses ports)",
		setup: func(ctx context.Context, b *bench, s *scenario) error {
			return setupSynproxy(b, s)
		},
	},
	{
		key:  "haproxy",
		name: "HAProxy (TCP)",
		how:  "haproxy mode tcp in the gateway namespace on VIP:80 -> backend:8080; gateway kernel listens, tcp_syncookies=1",
		setup: func(ctx context.Context, b *bench, s *scenario) error {
			return setupHAProxy(b, s)
		},
	},
	{
		key:  "none",
		name: "no defense",
		how:  "gateway routes the VIP to the backend, which owns it and listens on it; backend tcp_syncookies=0",
		setup: func(ctx context.Context, b *bench, s *scenario) error {
			return setupRouted(b, s, "0")
		},
	},
}

// setupRouted is the plain kernel: the gateway only routes (no conntrack,
// no NAT), the backend owns the VIP and its listen path is the defense.
func setupRouted(b *bench, s *scenario, syncookies string) error {
	if err := s.routeVIPToBackend(); err != nil {
		return err
	}
	if err := s.top.Backend.Sysctl("net.ipv4.tcp_syncookies", syncookies); err != nil {
		return err
	}
	return b.startServer(s, s.top.Backend, netip.AddrPortFrom(netip.IPv4Unspecified(), servicePort))
}

// setupSynproxy is the standard nftables recipe: SYNs to the service skip
// conntrack, so they and the client's third packet arrive as untracked or
// invalid and the synproxy statement answers them with cookies; only
// connections that completed the handshake reach the backend.
func setupSynproxy(b *bench, s *scenario) error {
	if err := setupRouted(b, s, "1"); err != nil {
		return err
	}
	// synproxy must announce the backend's own window scale: it does not
	// translate windows, only sequence numbers.
	ws, err := windowScale(s.top.Backend)
	if err != nil {
		return err
	}
	if err := synproxyRules(s.top.Gateway, s.top.VIP4, ws); err != nil {
		return err
	}
	// With loose pickup off, the ACK of a cookie handshake is invalid to
	// conntrack and goes to synproxy instead of creating a flow.
	if err := s.top.Gateway.Sysctl("net.netfilter.nf_conntrack_tcp_loose", "0"); err != nil {
		return err
	}
	// Every legitimate client of the lab has the same address, so its
	// kernel reuses a source port within seconds. The SYN of the reused
	// tuple is untracked, and its ACK then matches the old connection's
	// conntrack entry, still in TIME_WAIT (120 s by default): it is valid,
	// bypasses synproxy and the connection hangs. That measures port reuse
	// from one address, not SYN handling, so conntrack forgets closed
	// connections after 1 s here.
	return s.top.Gateway.Sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1")
}

// synproxyRules installs the standard recipe, in nft's words:
//
//	prerouting, priority raw: ip daddr VIP tcp dport 80 tcp flags & (fin|syn|rst|ack) == syn notrack
//	forward: ip daddr VIP tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale WS timestamp sack-perm
//	forward: ct state invalid drop
func synproxyRules(ns *lab.NS, vip netip.Addr, wscale int) error {
	raw, err := ns.NewFilter("sgbench-raw", lab.FilterHook{Hook: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	if err != nil {
		return err
	}
	svc := lab.Match{Dst: vip, Proto: unix.IPPROTO_TCP, DstPort: servicePort}
	syn := svc
	syn.TCPFlagsMask = lab.TCPFin | lab.TCPSyn | lab.TCPRst | lab.TCPAck
	syn.TCPFlags = lab.TCPSyn
	if _, err := raw.Add(syn, &expr.Notrack{}); err != nil {
		return err
	}
	fwd, err := ns.NewFilter("sgbench-fwd", lab.HookForward)
	if err != nil {
		return err
	}
	proxy := append(ctStateAny(ctStateInvalid|ctStateUntracked), &expr.SynProxy{
		Mss: 1460, MssValueSet: true, Wscale: uint8(wscale), WscaleValueSet: true, Timestamp: true, SackPerm: true,
	})
	if _, err := fwd.Add(svc, proxy...); err != nil {
		return err
	}
	_, err = fwd.Add(lab.Match{}, append(ctStateAny(ctStateInvalid), &expr.Verdict{Kind: expr.VerdictDrop})...)
	return err
}

// Conntrack state bits (NF_CT_STATE_*_BIT), in host byte order as the
// kernel loads them.
const (
	ctStateInvalid   = 1
	ctStateUntracked = 1 << 6
)

// ctStateAny matches packets whose conntrack state is one of bits.
func ctStateAny(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// setupHAProxy runs HAProxy in TCP mode on the VIP in the gateway; the
// gateway's own kernel listen path (with SYN cookies) takes the flood.
func setupHAProxy(b *bench, s *scenario) error {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return fmt.Errorf("haproxy not installed (apt-get install haproxy): %w", err)
	}
	for k, v := range map[string]string{
		"net.ipv4.tcp_syncookies":      "1",
		"net.ipv4.ip_local_port_range": "1024 65535",
		"net.ipv4.tcp_tw_reuse":        "1",
	} {
		if err := s.top.Gateway.Sysctl(k, v); err != nil {
			return err
		}
	}
	if err := b.startServer(s, s.top.Backend, netip.AddrPortFrom(netip.IPv4Unspecified(), backendPort)); err != nil {
		return err
	}
	cfg := joinLines(
		"global",
		"  maxconn 9000", // fits in the default limit of 20000 open files
		fmt.Sprintf("  nbthread %d", b.cpus),
		"defaults",
		"  mode tcp",
		"  timeout connect 3s",
		"  timeout client 30s",
		"  timeout server 30s",
		"  maxconn 9000",
		"frontend fe",
		fmt.Sprintf("  bind %s backlog 4096", s.target),
		"  default_backend be",
		"backend be",
		fmt.Sprintf("  server s1 %s", netip.AddrPortFrom(s.top.BackendIf.V4.Addr(), backendPort)),
	)
	path := filepath.Join(s.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write haproxy config: %w", err)
	}
	p, err := lab.StartDaemon(s.top.Gateway, filepath.Join(s.dir, "haproxy.log"), bin, "-db", "-f", path)
	if err != nil {
		return err
	}
	s.proc = p
	return p.WaitReady(10*time.Second, func() bool { return listening(s.top.Client, s.target) })
}

// setupSyngate runs the syngate binary built at start with a config for
// this lab. Its backend-leg source ports are widened (and the gateway's
// ephemeral range moved out of their way) so a few seconds of maximum
// connection rate do not run out of ports, which would measure the port
// range and not syngate.
func setupSyngate(ctx context.Context, b *bench, s *scenario) error {
	return startSyngate(b, s, "auto")
}

// startSyngate is setupSyngate with the given syn.cookies policy.
func startSyngate(b *bench, s *scenario, cookies string) error {
	if err := s.top.Gateway.Sysctl("net.ipv4.ip_local_port_range", "61000 65535"); err != nil {
		return err
	}
	// The peers of both gateway interfaces already run XDP programs (see
	// newScenario), which is what lab's PrepareGatewayXDP would add.
	if err := b.startServer(s, s.top.Backend, netip.AddrPortFrom(netip.IPv4Unspecified(), backendPort)); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`interfaces:
  - name: %s
  - name: %s
secret_file: %s
bpffs: "off"
metrics:
  listen: 127.0.0.1:9420
syn:
  cookies: %s
backend:
  ports: 1024-60999
services:
  - name: web
    listen: %s
    backend: %s
`, s.top.GatewayClient.Name, s.top.GatewayBackend.Name, filepath.Join(s.dir, "secret"),
		cookies, s.target, netip.AddrPortFrom(s.top.BackendIf.V4.Addr(), backendPort))
	path := filepath.Join(s.dir, "syngate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("write syngate config: %w", err)
	}
	ready := filepath.Join(s.dir, "ready")
	p, err := lab.StartDaemon(s.top.Gateway, filepath.Join(s.dir, "syngate.log"), b.syngateBin, "run", "-c", path, "-ready-file", ready, "-unpin")
	if err != nil {
		return err
	}
	s.proc = p
	return p.WaitFile(ready, 20*time.Second)
}

// listening reports whether a TCP connection to addr from ns succeeds.
func listening(ns *lab.NS, addr netip.AddrPort) bool {
	var c net.Conn
	err := ns.Run(func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), 500*time.Millisecond)
		return err
	})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// windowScale is the window scale ns's kernel announces on a listener:
// log2 of the largest receive buffer (tcp_rmem[2], at least rmem_max)
// minus 15, within 0-14, as tcp_select_initial_window computes it.
func windowScale(ns *lab.NS) (int, error) {
	var space uint64
	err := ns.Run(func() error {
		for _, f := range []string{"/proc/sys/net/ipv4/tcp_rmem", "/proc/sys/net/core/rmem_max"} {
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("read %s: %w", f, err)
			}
			fields := strings.Fields(string(b))
			if len(fields) == 0 {
				return fmt.Errorf("parse %s: empty", f)
			}
			v, err := strconv.ParseUint(fields[len(fields)-1], 10, 64)
			if err != nil {
				return fmt.Errorf("parse %s: %w", f, err)
			}
			space = max(space, v)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	ws := bits.Len64(space) - 1 - 15
	return min(max(ws, 0), 14), nil
}
