package main

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/syngate/syngate/demo"
)

func cmdDemo(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "demo", "demo [flags]   (as root)")
	floodFor := fs.Duration("duration", 10*time.Second, "how long the spoofed SYN flood lasts (at most 60s)")
	calm := fs.Duration("calm", 3*time.Second, "length of the phases before and after the flood")
	rate := fs.Int("flood-rate", 0, "flood packets per second; 0 = as fast as this machine allows")
	clients := fs.Int("clients", 8, "concurrent legitimate clients")
	metricsFile := fs.String("metrics-file", filepath.Join(os.TempDir(), "syngate-demo-metrics.txt"), "write the last /metrics scrape to `file` (the lab, and syngate's endpoint, are gone after the demo)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_, err := demo.Run(ctx, demo.Options{
		Flood: *floodFor, Calm: *calm, FloodRate: *rate, Clients: *clients,
		Out: e.stdout, MetricsFile: *metricsFile,
	})
	return err
}
