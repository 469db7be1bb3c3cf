package main

import (
	"errors"
	"fmt"
	"io"
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
		fmt.Fprintf(w, "metrics and health on http://%s/metrics, /healthz\n", cfg.Metrics.Listen)
	}
	fmt.Fprintf(w, "SYN-ACK retries %d (backoff 1s doubling), backend connect timeout %v, source ports %d-%d per source address and backend\n",
		cfg.SYN.SynAckRetries, cfg.Backend.ConnectTimeout, cfg.Backend.PortMin, cfg.Backend.PortMax)
	fmt.Fprintf(w, "flows: up to %d, idle %v, closed %v, reset %v\n",
		cfg.Flows.Max, cfg.Flows.EstablishedTimeout, cfg.Flows.CloseTimeout, cfg.Flows.ResetTimeout)
	rl := "off"
	if cfg.Filters.RateLimit > 0 {
		rl = fmt.Sprintf("%d SYN/s burst %d per /%d (v4) /%d (v6)", cfg.Filters.RateLimit, cfg.Filters.RateBurst, cfg.Filters.PrefixLenV4, cfg.Filters.PrefixLenV6)
	}
	fmt.Fprintf(w, "filters: drop SYN with payload %v, drop bad flags %v, rate limit %s\n\n",
		cfg.Filters.DropSynPayload, cfg.Filters.DropBadFlags, rl)
	for _, s := range cfg.Services {
		src := "from the route"
		if len(s.Sources) > 0 {
			src = strings.Trim(fmt.Sprint(s.Sources), "[]")
			if len(s.Sources) > 4 {
				src = fmt.Sprintf("%d addresses, %s to %s", len(s.Sources), s.Sources[0], s.Sources[len(s.Sources)-1])
			}
		}
		fmt.Fprintf(w, "service %s: %s -> %s (source %s)\n", s.Name, s.Listen, s.Backend, src)
		fmt.Fprintf(w, "  SYN queue %d, cookies %s; accept queue %d = min(backlog %d, somaxconn %d), on overflow %s\n",
			cfg.SYN.MaxSynBacklog, s.Cookies, cfg.EffectiveBacklog(s), s.Backlog, cfg.SYN.Somaxconn, s.OnOverflow)
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
