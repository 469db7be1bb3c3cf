package main

import (
	"fmt"
	"log/slog"

	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
)

// cmdReset detaches what `run` left attached and removes its pins: the
// uninstall, and the way out of pins this version cannot understand.
func cmdReset(e env, args []string) error {
	fs := newFlags(e, "reset", "reset -c FILE | -bpffs DIR")
	path := fs.String("c", "", "config `file` whose bpffs directory to reset")
	dir := fs.String("bpffs", "", "pin `directory` to reset (instead of -c)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (*path == "") == (*dir == "") {
		fmt.Fprintln(e.stderr, "syngate reset: give one of -c FILE or -bpffs DIR")
		return errUsage
	}
	if *path != "" {
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		*dir = cfg.BPFFS
	}
	if *dir == "off" {
		fmt.Fprintln(e.stdout, "bpffs is off: nothing is pinned")
		return nil
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	if err := bpf.Reset(*dir, log); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "syngate detached; %s removed\n", *dir)
	return nil
}
