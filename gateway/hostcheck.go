package gateway

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
)

// HostCheck is one check Run makes on the host before it starts.
type HostCheck struct {
	Name string
	Err  error // nil: passed
}

// CheckHost makes, without changing anything, the checks Run makes on this
// host before it attaches: capabilities, the backend port range against
// the kernel's ephemeral ports, the interfaces, the bpffs pin directory,
// a route to each backend, and the secret file's directory. `syngate check
// --host` prints them, so a config that check accepts is not refused by run
// on the same host.
func CheckHost(cfg *config.Config) []HostCheck {
	out := []HostCheck{
		{"capabilities (" + capNames() + ")", bpf.CheckCapabilities()},
		{"CAP_NET_RAW (AF_XDP sockets, the backend leg's raw socket)", hasCap(unix.CAP_NET_RAW, "CAP_NET_RAW")},
		{"locked memory for the AF_XDP buffers", checkMemlock()},
		{fmt.Sprintf("backend.ports %d-%d outside net.ipv4.ip_local_port_range", cfg.Backend.PortMin, cfg.Backend.PortMax),
			checkPortRange(cfg.Backend.PortMin, cfg.Backend.PortMax)},
	}
	for _, in := range cfg.Interfaces {
		_, err := net.InterfaceByName(in.Name)
		if err != nil {
			err = fmt.Errorf("interface %s: %w", in.Name, err)
		}
		out = append(out, HostCheck{"interface " + in.Name + " present", err})
	}
	if cfg.BPFFS != "off" {
		out = append(out, HostCheck{"bpffs at " + cfg.BPFFS, checkBPFFS(cfg.BPFFS)})
	}
	for _, s := range cfg.Services {
		if len(s.Sources) > 0 {
			continue
		}
		for _, m := range s.Backends {
			_, err := routeSource(m.Addr)
			out = append(out, HostCheck{fmt.Sprintf("service %s: route to backend %s", s.Name, m.Addr), err})
		}
	}
	out = append(out, HostCheck{"secret file " + cfg.SecretFile, checkSecretDir(cfg.SecretFile)})
	return out
}

func capNames() string {
	s := ""
	for i, c := range bpf.RequiredCapabilities {
		if i > 0 {
			s += ", "
		}
		s += c.Name
	}
	return s
}

// checkBPFFS makes ensureBPFFS's decision without acting on it: a pin
// directory on a bpffs, or under one, is fine; otherwise run mounts a
// bpffs on the parent, which needs an empty (or missing) directory and
// CAP_SYS_ADMIN.
func checkBPFFS(pin string) error {
	parent := filepath.Dir(pin)
	if isBPFFS(pin) || isBPFFS(parent) {
		return nil
	}
	if st, err := os.Stat(pin); err == nil {
		if st.IsDir() {
			return fmt.Errorf("%s exists but is not on a bpf filesystem (mount one there: mount -t bpf bpffs %s)", pin, pin)
		}
		return fmt.Errorf("%s is not a directory", pin)
	}
	if entries, err := os.ReadDir(parent); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s is not on a bpf filesystem and not empty; mount one (mount -t bpf bpffs %s) or set bpffs to a directory on one", parent, parent)
	}
	if err := hasCap(unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"); err != nil {
		return fmt.Errorf("%s is not a bpf filesystem, and run would mount one there, which needs CAP_SYS_ADMIN (%v): mount it (systemd does at boot: mount -t bpf bpffs %s), or set bpffs: off", parent, err, parent)
	}
	return nil // run mounts a bpffs on parent
}

// checkSecretDir checks that a missing secret can be created: run creates
// its missing directories, so the nearest existing ancestor must be a
// directory this process may write. (config checked an existing secret.)
func checkSecretDir(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	dir := filepath.Dir(path)
	for {
		st, err := os.Stat(dir)
		if err == nil {
			if !st.IsDir() {
				return fmt.Errorf("secret missing and %s is not a directory", dir)
			}
			if err := unix.Access(dir, unix.W_OK); err != nil {
				return fmt.Errorf("secret missing and %s is not writable: %w", dir, err)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) || dir == filepath.Dir(dir) {
			return fmt.Errorf("secret missing: %w", err)
		}
		dir = filepath.Dir(dir)
	}
}

// memlockHint explains the ENOBUFS of an AF_XDP UMEM registration: the
// kernel charges the UMEM against RLIMIT_MEMLOCK unless the process has
// CAP_IPC_LOCK.
func memlockHint(err error) string {
	if !errors.Is(err, unix.ENOBUFS) {
		return ""
	}
	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim)
	return fmt.Sprintf(" (the AF_XDP buffers, %d MiB a receive queue, exceed the locked-memory limit of %d KiB: grant CAP_IPC_LOCK, or raise the limit, e.g. LimitMEMLOCK=infinity in a systemd unit or `ulimit -l unlimited`)",
		socketConfig.Frames*2048>>20, lim.Cur>>10)
}

// hasCap reports whether the process's effective set holds capability bit.
func hasCap(bit int, name string) error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return err
			}
			if eff&(1<<bit) == 0 {
				return fmt.Errorf("effective capabilities lack %s", name)
			}
			return nil
		}
	}
	return errors.New("no CapEff in /proc/self/status")
}

// checkMemlock: without CAP_IPC_LOCK the kernel charges each AF_XDP
// socket's UMEM against RLIMIT_MEMLOCK. The number of sockets (one per
// receive queue) is not known here, so one socket's worth is the bound.
func checkMemlock() error {
	if hasCap(unix.CAP_IPC_LOCK, "CAP_IPC_LOCK") == nil {
		return nil
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		return err
	}
	need := uint64(socketConfig.Frames) * 2048
	if lim.Cur != unix.RLIM_INFINITY && lim.Cur < need {
		return fmt.Errorf("no CAP_IPC_LOCK and RLIMIT_MEMLOCK %d KiB is below one receive queue's %d KiB of AF_XDP buffers (grant CAP_IPC_LOCK or raise the limit: LimitMEMLOCK=infinity)", lim.Cur>>10, need>>10)
	}
	return nil
}
