// Command syngate-demo shows syngate under a SYN flood in one command: it
// builds a lab of network namespaces (client, gateway, backend), runs the
// syngate daemon in the gateway namespace on an embedded config, drives
// legitimate clients and a bounded spoofed SYN flood through it, prints a
// live line and a summary, and removes everything it created.
//
//	sudo go run ./cmd/syngate-demo
//
// It is a separate command so that the daemon operators deploy
// (cmd/syngate) links neither the lab, the flood generator nor the load
// generator.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/syngate/syngate/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, os.Stderr, os.Args[1:])
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "syngate-demo: interrupted")
		os.Exit(130)
	default:
		fmt.Fprintf(os.Stderr, "syngate-demo: %v\n", err)
		os.Exit(1)
	}
}

// errUsage marks a command-line mistake: exit code 2, like flag's.
var errUsage = errors.New("usage")

func run(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := flag.NewFlagSet("syngate-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sudo syngate-demo [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	floodFor := fs.Duration("duration", 10*time.Second, "how long the spoofed SYN flood lasts (at most 60s)")
	calm := fs.Duration("calm", 3*time.Second, "length of the phases before and after the flood")
	rate := fs.Int("flood-rate", 0, "flood packets per second; 0 = as fast as this machine allows")
	clients := fs.Int("clients", 8, "concurrent legitimate clients")
	metricsFile := fs.String("metrics-file", filepath.Join(os.TempDir(), "syngate-demo-metrics.txt"), "write the last /metrics scrape to `file` (the lab, and syngate's endpoint, are gone after the demo)")
	bin := fs.String("syngate", "", "the syngate `binary` to run; default: built from this source tree, else syngate next to this program or on PATH")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "syngate-demo: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root: it creates network namespaces and attaches XDP programs (try: sudo go run ./cmd/syngate-demo)")
	}
	if *bin == "" {
		dir, err := os.MkdirTemp("", "syngate-demo-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(stdout, "building syngate ...")
		if *bin, err = demo.BuildSyngate(dir); err != nil {
			return err
		}
	}
	_, err := demo.Run(ctx, demo.Options{
		Binary: *bin, Flood: *floodFor, Calm: *calm, FloodRate: *rate, Clients: *clients,
		Out: stdout, MetricsFile: *metricsFile,
	})
	return err
}
