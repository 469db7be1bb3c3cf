package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/control"
)

// reloadTimeout bounds the wait for the daemon's answer: a reload probes
// the new backends (at most 3s) and may load a new XDP program.
const reloadTimeout = 30 * time.Second

// cmdReload asks the running daemon to re-read its config file and apply
// it, and prints the outcome; a refused reload is an error (exit 1) that
// says why.
func cmdReload(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "reload", "reload [-socket PATH | -c FILE] [-json]")
	socket := fs.String("socket", control.DefaultPath, "the daemon's control `socket` (config control.socket)")
	path := fs.String("c", "", "take the control socket from this config `file` (the daemon re-reads its own file, the one it was started with)")
	asJSON := fs.Bool("json", false, "print the outcome as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path != "" {
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		if cfg.Control.Socket == "off" {
			return fmt.Errorf("%s: control.socket is off: send the daemon SIGHUP instead (its log says the outcome)", *path)
		}
		*socket = cfg.Control.Socket
	}
	ctx, cancel := context.WithTimeout(ctx, reloadTimeout)
	defer cancel()
	res, err := control.NewClient(*socket).Reload(ctx)
	if res != nil && *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(res); jerr != nil {
			return jerr
		}
	}
	if err != nil {
		return err
	}
	if !*asJSON {
		fmt.Fprintf(e.stdout, "reloaded: %s\n", summary(res))
	}
	return nil
}

// summary says in one line what a reload changed.
func summary(r *control.ReloadResult) string {
	var parts []string
	list := func(what string, names []string) {
		if len(names) > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", what, strings.Join(names, ", ")))
		}
	}
	list("services added:", r.Added)
	list("changed:", r.Changed)
	list("pools swapped:", r.Repooled)
	list("removed:", r.Removed)
	parts = append(parts, fmt.Sprintf("%d unchanged", r.Unchanged))
	list("also applied:", r.Applied)
	return strings.Join(parts, "; ")
}
