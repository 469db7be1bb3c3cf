package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/gateway"
)

func cmdCheck(e env, args []string) error {
	fs := newFlags(e, "check", "check -c FILE [-host]")
	path := fs.String("c", "", "config `file` (required)")
	host := fs.Bool("host", false, "also make the checks run makes on this host: capabilities, backend.ports against ip_local_port_range, interfaces, bpffs, routes to backends")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" {
		fmt.Fprintln(e.stderr, "syngate check: -c FILE is required")
		return errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	printPlan(e.stdout, cfg)
	if *host {
		return printHostChecks(e.stdout, gateway.CheckHost(cfg))
	}
	fmt.Fprintf(e.stdout, "\nhost not checked: run `syngate check -host -c FILE` on the gateway to make the checks run makes there (capabilities, backend.ports against ip_local_port_range, interfaces, bpffs)\n")
	return nil
}

// errHostChecks reports that `check --host` found problems (listed above it).
var errHostChecks = errors.New("host checks failed")

func printHostChecks(w io.Writer, checks []gateway.HostCheck) error {
	fmt.Fprintf(w, "\nhost checks:\n")
	failed := 0
	for _, c := range checks {
		if c.Err == nil {
			fmt.Fprintf(w, "  ok    %s\n", c.Name)
			continue
		}
		failed++
		fmt.Fprintf(w, "  FAIL  %s: %v\n", c.Name, c.Err)
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d", errHostChecks, failed, len(checks))
	}
	return nil
}

// printPlan says, in operator terms, what run would do with cfg.
func printPlan(w io.Writer, cfg *config.Config) {
	fmt.Fprintf(w, "config OK\n\n")
	for _, in := range cfg.Interfaces {
		fmt.Fprintf(w, "attach XDP to %s (mode %s), splice with datapath %s\n", in.Name, in.Mode, in.Datapath)
	}
	if cfg.BPFFS == "off" {
		fmt.Fprintf(w, "no pinning: the XDP program is detached on exit, spliced connections break on a restart\n")
	} else {
		fmt.Fprintf(w, "pin maps, links and program under %s: take over what is there; on exit leave the data path attached\n", cfg.BPFFS)
	}
	fmt.Fprintf(w, "cookie secret from %s (created if missing), key epoch %v\n", cfg.SecretFile, cfg.SYN.KeyRotation)
	if cfg.Metrics.Listen == "off" {
		fmt.Fprintf(w, "metrics: off\n")
	} else {
		fmt.Fprintf(w, "metrics and health on http://%s/metrics, /healthz, /readyz\n", cfg.Metrics.Listen)
	}
	fmt.Fprintf(w, "SYN-ACK retries %d (backoff 1s doubling), backend connect timeout %v, source ports %d-%d per source address and backend\n",
		cfg.SYN.SynAckRetries, cfg.Backend.ConnectTimeout, cfg.Backend.PortMin, cfg.Backend.PortMax)
	fmt.Fprintf(w, "flows: up to %d, idle %v, closed %v, reset %v\n",
		cfg.Flows.Max, cfg.Flows.EstablishedTimeout, cfg.Flows.CloseTimeout, cfg.Flows.ResetTimeout)
	rl := "off"
	if cfg.Filters.RateLimit > 0 {
		rl = fmt.Sprintf("%d SYN/s burst %d per /%d (v4) /%d (v6)", cfg.Filters.RateLimit, cfg.Filters.RateBurst, cfg.Filters.PrefixLenV4, cfg.Filters.PrefixLenV6)
	}
	fmt.Fprintf(w, "filters: drop SYN with payload %v, drop bad flags %v, rate limit %s\n",
		cfg.Filters.DropSynPayload, cfg.Filters.DropBadFlags, rl)
	if cfg.SYN.PeerCookieChecks > 0 {
		fmt.Fprintf(w, "peer cookies: up to %d ACKs/s per service checked as another gateway's cookie while this one's gate is closed\n", cfg.SYN.PeerCookieChecks)
	} else {
		fmt.Fprintf(w, "peer cookies: off (ACKs are checked as cookies only after this gateway's own overflow)\n")
	}
	printBGP(w, cfg)
	if len(cfg.Peers) > 0 {
		fmt.Fprintf(w, "peers %v: segments of connections this gateway does not know are handed to them\n", cfg.Peers)
	}
	for _, in := range cfg.Interfaces {
		if len(in.CPUs) > 0 {
			fmt.Fprintf(w, "receive queues of %s pinned to cpus %v (queue i on cpus[i mod %d])\n", in.Name, in.CPUs, len(in.CPUs))
		}
	}
	fmt.Fprintln(w)
	for _, s := range cfg.Services {
		src := "from the route"
		if len(s.Sources) > 0 {
			src = strings.Trim(fmt.Sprint(s.Sources), "[]")
			if len(s.Sources) > 4 {
				src = fmt.Sprintf("%d addresses, %s to %s", len(s.Sources), s.Sources[0], s.Sources[len(s.Sources)-1])
			}
		}
		var pool []string
		for _, m := range s.Backends {
			if len(s.Backends) == 1 && m.Weight == 1 {
				pool = append(pool, m.Addr.String())
				continue
			}
			pool = append(pool, fmt.Sprintf("%s (weight %d)", m.Addr, m.Weight))
		}
		fmt.Fprintf(w, "service %s: %s -> %s (source %s)\n", s.Name, s.Listen, strings.Join(pool, ", "), src)
		fmt.Fprintf(w, "  hash %s, proxy_protocol %s, on_no_backend %s; health check %s every %v (timeout %v, rise %d, fall %d)\n",
			s.Hash, s.ProxyProtocol, s.OnNoBackend, s.HealthCheck.Type, s.HealthCheck.Interval, s.HealthCheck.Timeout, s.HealthCheck.Rise, s.HealthCheck.Fall)
		fmt.Fprintf(w, "  SYN queue %d, cookies %s; accept queue %d = min(backlog %d, somaxconn %d), on overflow %s\n",
			s.Limits.MaxSynBacklog, s.Cookies, s.Limits.AcceptQueue(), s.Limits.Backlog, s.Limits.Somaxconn, s.OnOverflow)
		a := s.Announce
		fmt.Fprintf(w, "  announce: mss %s, window scale %s, sack %s, timestamps %s\n",
			opt(a.MSS, func(v uint16) string { return strconv.Itoa(int(v)) }),
			opt(a.WindowScale, func(v uint8) string { return strconv.Itoa(int(v)) }),
			opt(a.SACK, strconv.FormatBool), opt(a.Timestamps, strconv.FormatBool))
	}
}

func opt[T any](p *T, f func(T) string) string {
	if p == nil {
		return "learned from backend"
	}
	return f(*p)
}

// printBGP says what the BGP speaker would announce, and to whom.
func printBGP(w io.Writer, cfg *config.Config) {
	b := cfg.BGP
	if len(b.Peers) == 0 {
		fmt.Fprintf(w, "bgp: off (no peers): VIPs are not announced\n")
		return
	}
	gr := "off"
	if b.RestartTime > 0 {
		gr = b.RestartTime.String()
	}
	fmt.Fprintf(w, "bgp: AS %d, router ID %s, graceful restart %s\n", b.LocalASN, b.RouterID, gr)
	seen := map[netip.Addr]bool{}
	for _, s := range cfg.Services {
		if a := s.Listen.Addr(); !seen[a] {
			seen[a] = true
			fmt.Fprintf(w, "  announce %s/%d while a service on it has a healthy backend\n", a, a.BitLen())
			// A peer gets only its own family's routes: an IPv6 route
			// needs an IPv6 next hop, the session's local address.
			if !slices.ContainsFunc(b.Peers, func(p config.BGPPeer) bool { return p.Address.Is4() == a.Is4() }) {
				fmt.Fprintf(w, "    warning: no %s peer, so no router learns this route\n", family(a))
			}
		}
	}
	for _, p := range b.Peers {
		md5 := ""
		if p.Password != "" {
			md5 = ", TCP MD5"
		}
		fmt.Fprintf(w, "  peer %s AS %d port %d, hold %v keepalive %v%s (gets the %s VIPs)\n",
			p.Address, p.ASN, p.Port, p.HoldTime, p.Keepalive, md5, family(p.Address))
	}
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
