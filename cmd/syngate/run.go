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
	reload := watchHangup(ctx, *path, log)
	drain, restart := lifecycleSignals(ctx)
	return gateway.Run(ctx, cfg, gateway.Options{
		Version: build.Version, Revision: build.Revision, Logger: log, ReadyFile: *ready, Unpin: *unpin,
		Drain: drain, Restart: restart, Reload: reload,
	})
}

// watchHangup turns SIGHUP into reloads: the systemd unit's ExecReload
// sends it, and Go's default action would end the process (which systemd
// counts as a clean exit, so no restart either). Each SIGHUP re-reads the
// config file; a valid one goes to gateway.Run, which applies what it can
// live (the services' pools) and says what needs a restart.
func watchHangup(ctx context.Context, path string, log *slog.Logger) <-chan *config.Config {
	reload := make(chan *config.Config, 1)
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
			next, err := config.Load(path)
			if err != nil {
				log.Error("SIGHUP: config not reloaded", "err", err)
				continue
			}
			select {
			case reload <- next:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reload
}
