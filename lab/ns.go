package lab

import (
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
	"testing"

	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 keeps the bind mounts that name namespaces.
const netnsDir = "/run/netns"

// ErrNotRoot is returned when an operation needs privileges the process
// does not have; callers in tests usually skip on it (see RequireRoot).
var ErrNotRoot = errors.New("lab: needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")

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
	name := prefix + hex.EncodeToString(suffix[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	ns := &NS{name: name}
	if err := ns.IP("link", "set", "lo", "up"); err != nil {
		ns.Close()
		return nil, err
	}
	return ns, nil
}

// NewNS is Create for tests: the namespace is deleted by tb.Cleanup, so it
// goes away even when the test fails or calls FailNow.
func NewNS(tb testing.TB, prefix string) (*NS, error) {
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
// (and the peers of its veths) disappear with it.
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
	if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", ns.name, err, strings.TrimSpace(string(out))))
	}
	return errors.Join(errs...)
}

// Run calls fn on a locked OS thread that has entered the namespace, then
// moves the thread back. Sockets opened by fn stay in the namespace after
// Run returns and may be used from any goroutine; goroutines started by fn
// do not run in the namespace. If the thread cannot be moved back it is
// left locked so the runtime discards it instead of reusing it.
func (ns *NS) Run(fn func() error) error {
	target, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns.name, err)
	}
	defer unix.Close(target)

	// A fresh goroutine owns the locked thread, so a thread stuck in the
	// wrong namespace dies with it instead of returning to the caller.
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
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", ns.name, err)
			return
		}
		var fnErr error
		defer func() {
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				// Stay locked: the goroutine exits and the thread with it.
				errc <- errors.Join(fnErr, fmt.Errorf("leave namespace %s: %w", ns.name, err))
				return
			}
			runtime.UnlockOSThread()
			errc <- fnErr
		}()
		fnErr = fn()
	}()
	return <-errc
}

// Command prepares name with args to run inside the namespace
// (through `ip netns exec`).
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.name, name}, args...)...)
}

// Exec runs a command inside the namespace and returns its combined output.
// The error carries the command line and output, so tests can report it as is.
func (ns *NS) Exec(name string, args ...string) (string, error) {
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", ns.name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// IP runs `ip -n <ns> args...`.
func (ns *NS) IP(args ...string) error {
	out, err := exec.Command("ip", append([]string{"-n", ns.name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: ip %s: %w: %s", ns.name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Sysctl sets a sysctl (dotted name, e.g. "net.ipv4.ip_forward") inside
// the namespace. Only net.* keys are per namespace.
func (ns *NS) Sysctl(key, value string) error {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return ns.Run(func() error {
		// /proc/sys/net resolves against the opening thread's namespace.
		if err := os.WriteFile(path, []byte(value), 0); err != nil {
			return fmt.Errorf("%s: sysctl %s=%s: %w", ns.name, key, value, err)
		}
		return nil
	})
}

// Exists reports whether a namespace with this name is still mounted;
// tests use it to check that cleanup happened.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

// RequireRoot skips the test unless it runs as root, which the lab needs to
// create namespaces, veths and XDP programs.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root to create network namespaces, veth links and XDP programs (run as root, e.g. in CI)")
	}
}
