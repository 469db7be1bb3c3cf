package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ensureBPFFS makes sure the pin directory can live on a bpf filesystem:
// when neither pin nor its parent is on one, it mounts a bpffs on the
// parent (as `mount -t bpf bpffs /sys/fs/bpf` would, and as cilium-agent
// does at start), which must then be an empty directory; it is created
// if missing. A fresh boot without systemd's mount, a container, or
// `ip netns exec` (which mounts a new sysfs on /sys) leaves /sys/fs/bpf a
// plain, empty sysfs directory. The bpf package creates pin itself.
//
// The mount is left in place: pins are there to outlive the process.
// In a mount namespace of its own (ip netns exec) it goes away with the
// last process of that namespace, and the pins with it; mounted reports
// whether a mount happened, private whether it is in such a namespace.
func ensureBPFFS(pin string) (mounted, private bool, err error) {
	if isBPFFS(pin) {
		return false, false, nil
	}
	parent := filepath.Dir(pin)
	if isBPFFS(parent) {
		return false, false, nil
	}
	if st, err := os.Stat(pin); err == nil {
		if st.IsDir() {
			return false, false, fmt.Errorf("bpffs %s: exists but is not on a bpf filesystem (mount one there: mount -t bpf bpffs %s)", pin, pin)
		}
		return false, false, fmt.Errorf("bpffs %s: not a directory", pin)
	}
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return false, false, fmt.Errorf("bpffs: create %s: %w", parent, err)
	}
	// Mounting over files would hide them: only an empty directory (such as
	// sysfs's /sys/fs/bpf) becomes a bpffs.
	entries, err := os.ReadDir(parent)
	if err != nil {
		return false, false, fmt.Errorf("bpffs: %w", err)
	}
	if len(entries) > 0 {
		return false, false, fmt.Errorf("bpffs: %s is not on a bpf filesystem and not empty; mount one (mount -t bpf bpffs %s) or set bpffs to a directory on one", parent, parent)
	}
	if err := unix.Mount("bpffs", parent, "bpf", 0, ""); err != nil {
		return false, false, fmt.Errorf("bpffs: mount a bpf filesystem on %s: %w", parent, err)
	}
	if !isBPFFS(parent) {
		return true, false, fmt.Errorf("bpffs: mounted a bpf filesystem on %s, but it is not one", parent)
	}
	return true, privateMountNS(), nil
}

// isBPFFS reports whether path exists on a bpf filesystem.
func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// privateMountNS reports whether this process runs in another mount
// namespace than the process that started it, as it does under
// `ip netns exec`; a mount made there is seen by nobody else and ends with
// the namespace (unknown counts as no).
func privateMountNS() bool {
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	parent, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid()))
	return errors.Join(err1, err2) == nil && self != parent
}

// prepareBPFFS is ensureBPFFS with the logging Run wants. ephemeral
// reports a bpffs that ends with this process's mount namespace, and the
// data path with it.
func prepareBPFFS(pin string, log *slog.Logger) (ephemeral bool, err error) {
	mounted, private, err := ensureBPFFS(pin)
	if err != nil {
		return false, err
	}
	if mounted {
		log.Info("mounted a bpf filesystem for the pinned maps", "path", filepath.Dir(pin))
	}
	if private {
		log.Warn("the bpf filesystem was mounted in a private mount namespace (ip netns exec?): the pinned maps go away with it, so spliced flows do not survive a restart; mount a bpffs outside /sys and point bpffs there (see README)", "path", filepath.Dir(pin))
	}
	return mounted && private, nil
}
