package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces are bind-mounted, the same place
// iproute2 uses, so `ip netns` (when installed) sees the lab's namespaces.
const netnsDir = "/run/netns"

// ErrNotRoot is returned when an operation needs privileges the process
// does not have; callers in tests usually skip on it (see RequireRoot).
var ErrNotRoot = errors.New("lab: needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")

// TB is the part of testing.TB the lab uses. Declaring it here keeps the
// testing package out of programs built on the lab (the demo, the
// benchmark); *testing.T and *testing.B satisfy it.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Skip(args ...any)
}

// NS is a named network namespace created by this package. Its methods may
// be called from any goroutine; Close is idempotent.
type NS struct {
	name string

	mu      sync.Mutex
	closers []func() error // XDP links etc., closed before the namespace is deleted
	closed  bool
}

// Create makes a fresh network namespace named prefix plus a random
// suffix, with lo up. The caller must Close it; tests should use NewNS,
// which registers the cleanup itself.
func Create(prefix string) (*NS, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	var suffix [3]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, fmt.Errorf("random namespace suffix: %w", err)
	}
	ns := &NS{name: prefix + hex.EncodeToString(suffix[:])}
	if err := ns.create(); err != nil {
		return nil, err
	}
	if err := ns.SetUp("lo"); err != nil {
		ns.Close()
		return nil, err
	}
	return ns, nil
}

// create makes the namespace on a thread of its own (unshare) and keeps it
// alive after the thread leaves it by bind-mounting it at Path, as
// `ip netns add` does.
func (ns *NS) create() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	path := ns.Path()
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", ns.name, err)
	}
	f.Close()
	err = onThread(func() error { return unix.Unshare(unix.CLONE_NEWNET) }, func() error {
		return unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
	})
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("create namespace %s: %w", ns.name, err)
	}
	return nil
}

// NewNS is Create for tests: the namespace is deleted by tb.Cleanup, so it
// goes away even when the test fails or calls FailNow.
func NewNS(tb TB, prefix string) (*NS, error) {
	tb.Helper()
	ns, err := Create(prefix)
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() {
		if err := ns.Close(); err != nil {
			tb.Errorf("delete namespace: %v", err)
		}
	})
	return ns, nil
}

// Name is the namespace's name as `ip netns` knows it.
func (ns *NS) Name() string { return ns.name }

// Path is the bind-mounted namespace file, usable with setns(2).
func (ns *NS) Path() string { return filepath.Join(netnsDir, ns.name) }

// String returns the name.
func (ns *NS) String() string { return ns.name }

// onClose registers fn to run when the namespace is closed, before it is
// deleted; used to drop XDP links that live in the namespace.
func (ns *NS) onClose(fn func() error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.closers = append(ns.closers, fn)
}

// Close releases what the namespace holds and deletes it. Interfaces in it
// (and the peers of its veths) disappear with it, once nothing else (a
// socket, a process) holds the namespace.
func (ns *NS) Close() error {
	ns.mu.Lock()
	if ns.closed {
		ns.mu.Unlock()
		return nil
	}
	ns.closed = true
	closers := ns.closers
	ns.closers = nil
	ns.mu.Unlock()

	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	path := ns.Path()
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("delete namespace %s: unmount: %w", ns.name, err))
	} else if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns.name, err))
	}
	return errors.Join(errs...)
}

// fd opens the namespace file; the caller closes it.
func (ns *NS) fd() (int, error) {
	fd, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open namespace %s: %w", ns.name, err)
	}
	return fd, nil
}

// Run calls fn on a locked OS thread that has entered the namespace, then
// moves the thread back. Sockets opened by fn stay in the namespace after
// Run returns and may be used from any goroutine; goroutines started by fn
// do not run in the namespace, but processes fn starts do (a child inherits
// the network namespace of the thread that forks it). If the thread cannot
// be moved back it is left locked so the runtime discards it instead of
// reusing it.
func (ns *NS) Run(fn func() error) error {
	target, err := ns.fd()
	if err != nil {
		return err
	}
	defer unix.Close(target)
	err = onThread(func() error { return unix.Setns(target, unix.CLONE_NEWNET) }, fn)
	if err != nil {
		return fmt.Errorf("%s: %w", ns.name, err)
	}
	return nil
}

// onThread runs enter and then fn on a fresh goroutine locked to its OS
// thread, and moves the thread back to the network namespace it started
// in. A thread that cannot be moved back stays locked, so it exits with
// the goroutine instead of serving other goroutines from the wrong
// namespace.
func onThread(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := enter(); err != nil {
			// enter may have half-happened; only a successful move back
			// makes the thread reusable.
			if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
			errc <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		var fnErr error
		defer func() {
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				// Stay locked: the goroutine exits and the thread with it.
				errc <- errors.Join(fnErr, fmt.Errorf("leave namespace: %w", err))
				return
			}
			runtime.UnlockOSThread()
			errc <- fnErr
		}()
		fnErr = fn()
	}()
	return <-errc
}

// Cmd is a program to run inside a namespace: an exec.Cmd whose Start
// forks from a thread that has entered the namespace, so the program runs
// there without `ip netns exec` (and, unlike it, sees the host's /sys).
// Set its fields (Stdin, Stdout, SysProcAttr, ...) as on an exec.Cmd.
type Cmd struct {
	*exec.Cmd
	ns *NS
}

// Command prepares name with args to run inside the namespace. It is for
// real programs (syngate, a server); the lab's own setup uses netlink,
// nftables and ethtool calls instead of commands.
func (ns *NS) Command(name string, args ...string) *Cmd {
	return &Cmd{Cmd: exec.Command(name, args...), ns: ns}
}

// CommandContext is Command with a context that kills the program.
func (ns *NS) CommandContext(ctx context.Context, name string, args ...string) *Cmd {
	return &Cmd{Cmd: exec.CommandContext(ctx, name, args...), ns: ns}
}

// Start starts the program inside the namespace.
func (c *Cmd) Start() error {
	return c.ns.Run(c.Cmd.Start)
}

// Run starts the program inside the namespace and waits for it.
func (c *Cmd) Run() error {
	if err := c.Start(); err != nil {
		return err
	}
	return c.Wait()
}

// Output runs the program and returns its standard output.
func (c *Cmd) Output() ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("lab: Stdout already set")
	}
	var out strings.Builder
	c.Stdout = &out
	err := c.Run()
	return []byte(out.String()), err
}

// CombinedOutput runs the program and returns its standard output and
// standard error.
func (c *Cmd) CombinedOutput() ([]byte, error) {
	if c.Stdout != nil || c.Stderr != nil {
		return nil, errors.New("lab: Stdout or Stderr already set")
	}
	var out syncBuilder
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	return []byte(out.String()), err
}

// syncBuilder is a strings.Builder that two copying goroutines may share.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Exec runs a program inside the namespace and returns its combined output.
// The error carries the command line and output, so tests can report it as is.
func (ns *NS) Exec(name string, args ...string) (string, error) {
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", ns.name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sysctl sets a sysctl (dotted name, e.g. "net.ipv4.ip_forward") inside
// the namespace. Only net.* keys are per namespace.
func (ns *NS) Sysctl(key, value string) error {
	path := sysctlPath(key)
	return ns.Run(func() error {
		// /proc/sys/net resolves against the opening thread's namespace.
		if err := os.WriteFile(path, []byte(value), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// ReadSysctl reads a sysctl inside the namespace, without the trailing
// newline.
func (ns *NS) ReadSysctl(key string) (string, error) {
	return ns.ReadFile(sysctlPath(key))
}

// ReadFile reads a per-namespace /proc file (/proc/net/snmp,
// /proc/sys/net/...) as seen from inside the namespace, without the
// trailing newline.
func (ns *NS) ReadFile(path string) (string, error) {
	var b []byte
	err := ns.Run(func() (err error) {
		// /proc/self/net follows the reading thread's namespace only
		// through /proc/thread-self; /proc/net is a link to /proc/self/net.
		p := path
		if rest, ok := strings.CutPrefix(path, "/proc/net/"); ok {
			p = "/proc/thread-self/net/" + rest
		}
		b, err = os.ReadFile(p)
		return err
	})
	return strings.TrimSuffix(string(b), "\n"), err
}

func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// Exists reports whether a namespace with this name is still mounted;
// tests use it to check that cleanup happened.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

// RequireRoot skips the test unless it runs as root, which the lab needs to
// create namespaces, veths and XDP programs.
func RequireRoot(tb TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root to create network namespaces, veth links and XDP programs (run as root, e.g. in CI)")
	}
}
