package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/gateway"
)

func cmdRun(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "run", "run -c FILE [flags]")
	path := fs.String("c", "", "config `file` (required)")
	ready := fs.String("ready-file", "", "write the PID to `file` once traffic is being handled")
	unpin := fs.Bool("unpin", false, "on exit, detach and remove everything pinned, as `syngate reset` does (spliced connections break); by default the data path stays attached for the next syngate")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	format := fs.String("log-format", "text", "log `format`: text (logfmt) or json (one object per line, for journald or a log shipper)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" {
		fmt.Fprintln(e.stderr, "syngate run: -c FILE is required")
		return errUsage
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(e.stderr, "syngate run: -log-level: %v\n", err)
		return errUsage
	}
	hopts := &slog.HandlerOptions{Level: lv}
	var handler slog.Handler
	switch *format {
	case "text":
		handler = slog.NewTextHandler(e.stderr, hopts)
	case "json":
		handler = slog.NewJSONHandler(e.stderr, hopts)
	default:
		fmt.Fprintf(e.stderr, "syngate run: -log-format: %q: want text or json\n", *format)
		return errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := slog.New(handler)
	reload := make(chan gateway.ReloadRequest)
	reloadOnHangup(ctx, reload)
	drain, restart := lifecycleSignals(ctx)
	return gateway.Run(ctx, cfg, gateway.Options{
		Version: build.Version, Revision: build.Revision, Logger: log, ReadyFile: *ready, Unpin: *unpin,
		ConfigPath: *path, Reload: reload, Drain: drain, Restart: restart,
	})
}

// reloadOnHangup turns SIGHUP into reload requests, as `syngate reload`
// (the systemd unit's ExecReload) does over the control socket. The
// gateway logs and counts the outcome. (Go's default action would end the
// process.)
func reloadOnHangup(ctx context.Context, reload chan<- gateway.ReloadRequest) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			select {
			case reload <- gateway.ReloadRequest{Trigger: "SIGHUP"}:
			case <-ctx.Done():
				return
			}
		}
	}()
}
