package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/syngate/syngate/control"
	"github.com/syngate/syngate/metrics"
)

// The lifecycle signals of `syngate run`. Drain is also a request on the
// control socket (POST /v1/drain), which `syngate drain` uses; the signal
// stays as a fallback for a daemon without the socket.
const (
	drainSignal   = syscall.SIGUSR1 // withdraw the VIPs, keep serving
	restartSignal = syscall.SIGUSR2 // exit, leaving the routes to graceful restart
)

// lifecycleSignals turns the drain and restart signals into the channels
// gateway.Options takes, until ctx ends.
func lifecycleSignals(ctx context.Context) (drain, restart <-chan struct{}) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, drainSignal, restartSignal)
	d, r := make(chan struct{}, 1), make(chan struct{}, 1)
	go func() {
		defer signal.Stop(sigs)
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-sigs:
				ch := d
				if s == restartSignal {
					ch = r
				}
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}()
	return d, r
}

// cmdDrain asks a running syngate to drain and follows it until its open
// connections are 0 or the deadline passes, then reports what is left. By
// default it asks over the control socket and reads the open connections
// there; with -pid or -pid-file it sends the drain signal instead and
// reads syngate_connections_open from the daemon's /metrics.
func cmdDrain(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "drain", "drain [-socket PATH | -pid PID | -pid-file FILE] [flags]")
	socket := fs.String("socket", control.DefaultPath, "the daemon's control `socket` (config control.socket)")
	pid := fs.Int("pid", 0, "signal the syngate with this `PID` instead (SIGUSR1; for a daemon without a control socket)")
	pidFile := fs.String("pid-file", "", "signal the syngate whose PID is in `file` (run's -ready-file) instead")
	deadline := fs.Duration("deadline", 5*time.Minute, "stop waiting for open connections after this `duration`")
	addr := fs.String("metrics", "127.0.0.1:9420", "the daemon's metrics `address` (with -pid or -pid-file)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pidFile != "" {
		b, err := os.ReadFile(*pidFile)
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		if *pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			return fmt.Errorf("drain: pid file %s: %w", *pidFile, err)
		}
		if *pid <= 0 {
			return fmt.Errorf("drain: pid file %s holds no PID", *pidFile)
		}
	}
	var open func(context.Context) (int, error)
	var who string
	if *pid > 0 {
		if err := syscall.Kill(*pid, drainSignal); err != nil {
			return fmt.Errorf("drain: signal syngate (pid %d): %w", *pid, err)
		}
		who = fmt.Sprintf("syngate (pid %d)", *pid)
		open = func(ctx context.Context) (int, error) { return openConnections(ctx, *addr) }
	} else {
		c := control.NewClient(*socket)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.Drain(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("drain: %w (-pid sends the drain signal instead)", err)
		}
		who = "syngate at " + *socket
		open = func(ctx context.Context) (int, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			d, err := c.DrainState(ctx)
			if err != nil {
				return 0, err
			}
			return d.Open, nil
		}
	}
	start := time.Now()
	fmt.Fprintf(e.stdout, "drain: VIPs of %s withdrawn; waiting up to %v for its connections\n", who, *deadline)
	last := -1
	for {
		n, err := open(ctx)
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		if n != last {
			fmt.Fprintf(e.stdout, "drain: %d connections open after %v\n", n, time.Since(start).Round(100*time.Millisecond))
			last = n
		}
		if n == 0 {
			fmt.Fprintf(e.stdout, "drain: done in %v\n", time.Since(start).Round(100*time.Millisecond))
			return nil
		}
		if time.Since(start) >= *deadline {
			return fmt.Errorf("drain: deadline %v passed with %d connections still open (they keep being served)", *deadline, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// openConnections reads syngate_connections_open from /metrics at addr.
func openConnections(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	s, err := metrics.ParseText(string(body))
	if err != nil {
		return 0, err
	}
	v, ok := s["syngate_connections_open"]
	if !ok {
		return 0, errors.New("metrics have no syngate_connections_open: is it a syngate with drain support?")
	}
	return int(v), nil
}
