// Package health runs active health checks of backends: a TCP connect, or
// an HTTP request whose response status must match, from a given source
// address, every interval, with HAProxy's rise and fall counting.
//
//	c := health.Checker{Target: addr, Source: src, Config: cfg, Report: func(r health.Result) {...}}
//	go c.Run(ctx)
//
// It knows nothing of the engine: Report receives every result and every
// change of state.
package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/syngate/syngate/spec"
)

// Config is one backend's check: the service's (spec.HealthCheck; a
// Type other than spec.CheckHTTP checks a TCP connect, an empty Host means
// the target's address) and what goes first on its connections.
type Config struct {
	spec.HealthCheck
	// Preamble is sent first on every check connection: the PROXY
	// protocol header of a local connection ("PROXY UNKNOWN" in v1, the
	// LOCAL command in v2) when the backend expects one, so a backend
	// listening with PROXY protocol neither logs a broken header nor
	// fails the HTTP request (HAProxy's check-send-proxy).
	Preamble []byte
}

// LocalProxyHeader is the PROXY protocol header (version 1 or 2) of a
// connection the proxy itself opened, which carries no client address.
func LocalProxyHeader(version int) []byte {
	switch version {
	case 1:
		return []byte("PROXY UNKNOWN\r\n")
	case 2:
		return append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x20, 0x00, 0, 0)
	}
	return nil
}

// Result is one check's outcome.
type Result struct {
	OK      bool
	Err     error // why it failed
	Latency time.Duration
	// Up is the backend's state after this result; Changed says whether
	// this result changed it.
	Up, Changed bool
}

// Checker checks one backend. Its state starts up: a backend is trusted
// until Fall checks in a row fail (HAProxy starts servers the same way),
// so starting a gateway never refuses connections its backends would
// take.
type Checker struct {
	Target netip.AddrPort
	Source netip.Addr // invalid: chosen by the route
	Config Config
	Report func(Result)
	// StartDown starts the backend down (it needs Rise passes), for a
	// checker that replaces one that had taken it down.
	StartDown bool
}

// Run checks the backend now and then every Interval until ctx ends.
func (c *Checker) Run(ctx context.Context) {
	up := !c.StartDown
	var passes, fails int
	t := time.NewTicker(c.Config.Interval)
	defer t.Stop()
	for {
		start := time.Now()
		err := c.Check(ctx)
		if ctx.Err() != nil {
			return
		}
		r := Result{OK: err == nil, Err: err, Latency: time.Since(start)}
		if r.OK {
			passes, fails = passes+1, 0
			if !up && passes >= c.Config.Rise {
				up, r.Changed = true, true
			}
		} else {
			passes, fails = 0, fails+1
			if up && fails >= c.Config.Fall {
				up, r.Changed = false, true
			}
		}
		r.Up = up
		c.Report(r)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check runs one check, bounded by Timeout.
func (c *Checker) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.Config.Timeout)
	defer cancel()
	d := net.Dialer{}
	if c.Source.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.Source, 0))
	}
	conn, err := d.DialContext(ctx, "tcp", c.Target.String())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if len(c.Config.Preamble) > 0 {
		if _, err := conn.Write(c.Config.Preamble); err != nil {
			return fmt.Errorf("send PROXY header: %w", err)
		}
	}
	if c.Config.Type != spec.CheckHTTP {
		return nil
	}
	host := c.Config.Host
	if host == "" {
		host = c.Target.String()
	}
	req := "GET " + c.Config.Path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: syngate-health\r\nConnection: close\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	line, err := textproto.NewReader(bufio.NewReader(conn)).ReadLine()
	if err != nil {
		return fmt.Errorf("read status: %w", err)
	}
	status, err := parseStatus(line)
	if err != nil {
		return err
	}
	if status != c.Config.Status {
		return fmt.Errorf("status %d, want %d", status, c.Config.Status)
	}
	return nil
}

// errBadStatus is returned for a response that is not HTTP.
var errBadStatus = errors.New("not an HTTP status line")

// parseStatus reads the code of "HTTP/1.x NNN reason".
func parseStatus(line string) (int, error) {
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/") || len(rest) < 3 {
		return 0, fmt.Errorf("%w: %q", errBadStatus, line)
	}
	n, err := strconv.Atoi(rest[:3])
	if err != nil {
		return 0, fmt.Errorf("%w: %q", errBadStatus, line)
	}
	return n, nil
}
