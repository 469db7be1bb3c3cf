// Command syngate is a SYN-flood defense gateway: an XDP program steers
// handshakes for protected services to a Go handshake engine over AF_XDP,
// and splices validated connections to their backends inside XDP.
//
//	syngate check -c /etc/syngate/syngate.yaml   # validate, print the plan
//	syngate run -c /etc/syngate/syngate.yaml     # run the gateway
//	syngate reload                               # re-read and apply the config (SIGHUP)
//	syngate reset -c /etc/syngate/syngate.yaml   # detach, remove the pins
//	syngate version                              # version and VCS revision
//
// The lab demo is a separate command, cmd/syngate-demo, so this binary
// holds the daemon only. See README.md for the configuration and metrics references.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/syngate/syngate/buildinfo"
)

// version and revision may be set at build time with
// -ldflags "-X main.version=v1.2.0 -X main.revision=..."; when they are
// not, buildinfo reads what the go command stamped into the binary.
var version, revision string

// build is this binary's identity, reported by `syngate version` and the
// build_info metric.
var build = buildinfo.Read(version, revision)

// env carries what a command touches outside itself, so tests can run
// commands in-process.
type env struct {
	stdout, stderr io.Writer
}

// errUsage marks a command-line mistake: exit code 2, like flag's.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, env{stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "syngate: interrupted")
		return 130 // 128 + SIGINT, as shells report it
	default:
		fmt.Fprintf(stderr, "syngate: %v\n", err)
		return 1
	}
}

const usage = `syngate: a SYN-flood defense gateway.

Usage:
  syngate run -c FILE      run the gateway with the config in FILE
  syngate check -c FILE    validate FILE and print what syngate would do (-host: and check this host)
  syngate drain            withdraw the running daemon's VIPs, wait for its connections to end
  syngate status           services, cookie mode, queues, rates, backends of the running daemon
  syngate flows [flags]    the running daemon's connections: both legs, state, packets and bytes
  syngate reload           make the running daemon re-read and apply its config file (as SIGHUP does)
  syngate reset -c FILE    detach syngate and remove its pins (spliced connections break)
  syngate version          print the version and the VCS revision it was built from

Run 'syngate COMMAND -h' for a command's flags.
`

func run(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, e, rest)
	case "check":
		return cmdCheck(e, rest)
	case "drain":
		return cmdDrain(ctx, e, rest)
	case "status":
		return cmdStatus(ctx, e, rest)
	case "flows":
		return cmdFlows(ctx, e, rest)
	case "reload":
		return cmdReload(ctx, e, rest)
	case "reset":
		return cmdReset(e, rest)
	case "version", "--version":
		fmt.Fprintf(e.stdout, "syngate %s\n", build)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(e.stdout, usage)
		return nil
	default:
		fmt.Fprintf(e.stderr, "syngate: unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}

// newFlags returns a flag set whose errors are reported once, by the caller.
func newFlags(e env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: syngate %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags maps flag errors onto exit codes: -h is success, anything else
// a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "syngate %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}
