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
	unpin := fs.Bool("unpin", false, "remove the pinned BPF maps on exit (spliced flows do not survive a restart)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
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
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lv}))
	reload := make(chan *config.Config, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			next, err := config.Load(*path)
			if err != nil {
				log.Error("reload: config not applied", "err", err)
				continue
			}
			select {
			case reload <- next:
			case <-ctx.Done():
				return
			}
		}
	}()
	return gateway.Run(ctx, cfg, gateway.Options{Version: build.Version, Revision: build.Revision, Logger: log, ReadyFile: *ready, Unpin: *unpin, Reload: reload})
}
