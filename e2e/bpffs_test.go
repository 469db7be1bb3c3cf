package e2e

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netnsExecFlag makes the test binary act as `ip netns exec` for the
// program after it (see asIPNetnsExec).
const netnsExecFlag = "-sgf-netns-exec"

// asIPNetnsExec does what `ip netns exec` does after entering the network
// namespace (which lab.Cmd did already): a mount namespace of its own, the
// host's mounts as slaves, and a new sysfs on /sys, which shows this
// network namespace's devices and has no bpffs on /sys/fs/bpf. Then it
// executes args. The thread that unshares is the one that executes, so
// the program runs in the new mount namespace.
func asIPNetnsExec(args []string) {
	runtime.LockOSThread()
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "netns exec: %s: %v\n", what, err)
		os.Exit(1)
	}
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		fail("unshare mount namespace", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		fail("make / a slave", err)
	}
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil {
		fail("unmount /sys", err)
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		fail("mount sysfs", err)
	}
	fail("exec "+args[0], syscall.Exec(args[0], args, os.Environ()))
}

// TestRunUnderIPNetnsExec runs syngate with the default bpffs
// (/sys/fs/bpf/syngate) as `ip netns exec` would start it, where
// /sys/fs/bpf is a plain sysfs directory: syngate mounts a bpffs there,
// says that its pins do not outlive it, and serves; the host's bpffs is
// left alone.
func TestRunUnderIPNetnsExec(t *testing.T) {
	o := labOptions{bpffs: "/sys/fs/bpf/syngate", netnsExec: true}
	top := newLab(t, o)
	echoServer(t, top)
	var st unix.Statfs_t
	hostPins := unix.Statfs("/sys/fs/bpf/syngate", &st) == nil
	g := startSyngate(t, top, o)
	if err := echoBulk(g, 1<<20, 3, time.Minute); err != nil {
		t.Fatal(err)
	}
	logs := g.d.Logs()
	for _, want := range []string{"mounted a bpf filesystem", "private mount namespace"} {
		if !strings.Contains(logs, want) {
			t.Errorf("syngate's log lacks %q:\n%s", want, logs)
		}
	}
	if !hostPins && unix.Statfs("/sys/fs/bpf/syngate", &st) == nil {
		t.Errorf("syngate pinned into the host's /sys/fs/bpf")
	}
}
