package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mountsAt counts the mounts whose mount point is path.
func mountsAt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			n++
		}
	}
	return n
}

// TestEnsureBPFFS: a pin path whose parent is a plain empty directory gets
// a bpffs mounted there, once; a parent with files in it, or a pin
// directory that exists off bpffs, is an error and nothing is mounted.
func TestEnsureBPFFS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a bpf filesystem needs root")
	}
	root := t.TempDir()
	parent := filepath.Join(root, "bpf") // missing: created
	pin := filepath.Join(parent, "syngate")
	t.Cleanup(func() {
		for mountsAt(t, parent) > 0 {
			if err := unix.Unmount(parent, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", parent, err)
				return
			}
		}
	})
	if isBPFFS(parent) || isBPFFS(root) {
		t.Fatalf("%s is on a bpffs before the test", root)
	}
	mounted, _, err := ensureBPFFS(pin)
	if err != nil || !mounted {
		t.Fatalf("ensureBPFFS(%s) = %v, %v; want a mount", pin, mounted, err)
	}
	if !isBPFFS(parent) || mountsAt(t, parent) != 1 {
		t.Fatalf("%s: bpffs %v, %d mounts", parent, isBPFFS(parent), mountsAt(t, parent))
	}
	// The bpf package creates the pin directory on it.
	if err := os.Mkdir(pin, 0o700); err != nil || !isBPFFS(pin) {
		t.Fatalf("mkdir %s on the new bpffs: %v", pin, err)
	}
	// Again (a restart): nothing more is mounted.
	for _, p := range []string{pin, filepath.Join(parent, "other")} {
		if mounted, _, err := ensureBPFFS(p); err != nil || mounted {
			t.Errorf("second ensureBPFFS(%s) = %v, %v; want nothing to do", p, mounted, err)
		}
	}
	if n := mountsAt(t, parent); n != 1 {
		t.Errorf("%d mounts on %s after a restart, want 1", n, parent)
	}

	// Files in the parent are never hidden under a mount.
	full := filepath.Join(root, "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if mounted, _, err := ensureBPFFS(filepath.Join(full, "syngate")); err == nil || mounted || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty parent: %v, %v", mounted, err)
	}
	// A pin directory that exists off bpffs is a mistake to report.
	plain := filepath.Join(root, "plain", "syngate")
	if err := os.MkdirAll(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	if mounted, _, err := ensureBPFFS(plain); err == nil || mounted {
		t.Errorf("existing plain directory: %v, %v", mounted, err)
	}
	for _, p := range []string{full, filepath.Dir(plain)} {
		if mountsAt(t, p) != 0 {
			t.Errorf("something was mounted on %s", p)
		}
	}
}
