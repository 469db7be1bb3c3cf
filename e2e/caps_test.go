package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
)

// unitCapabilities are the capabilities packaging/syngate.service grants
// (CapabilityBoundingSet). TestCapabilities proves each one necessary and
// the set sufficient; keep the two lists in step.
var unitCapabilities = map[string]uintptr{
	"CAP_BPF":       unix.CAP_BPF,       // create maps, load the program
	"CAP_NET_ADMIN": unix.CAP_NET_ADMIN, // XDP program type, XSKMAP/DEVMAP maps, attach to interfaces
	"CAP_NET_RAW":   unix.CAP_NET_RAW,   // AF_XDP sockets, the raw IP socket of the backend leg
	// The verifier refuses the program's packet pointer arithmetic
	// (data_end - data) without it: "R1 pointer -= pointer prohibited".
	"CAP_PERFMON": unix.CAP_PERFMON,
	// AF_XDP charges each socket's UMEM (16 MiB) against RLIMIT_MEMLOCK
	// unless the process has it; Linux's usual limit is 8 MiB. The unit
	// also sets LimitMEMLOCK=infinity, but a test machine without
	// CAP_SYS_RESOURCE cannot raise the limit to show that alone.
	"CAP_IPC_LOCK": unix.CAP_IPC_LOCK,
}

// withoutReason is what syngate says when the capability is missing.
var withoutReason = map[string]string{
	"CAP_BPF":       "lack CAP_BPF",
	"CAP_NET_ADMIN": "lack CAP_NET_ADMIN",
	"CAP_PERFMON":   "lack CAP_PERFMON",
	"CAP_NET_RAW":   "raw IPv4 socket: operation not permitted",
	"CAP_IPC_LOCK":  "LimitMEMLOCK",
}

// defaultMemlock is Linux's usual RLIMIT_MEMLOCK (8 MiB), below one
// AF_XDP socket's 16 MiB UMEM: every run of the re-exec has it, as a
// service without LimitMEMLOCK would.
const defaultMemlock = 8 << 20

// Environment of the capability-dropping re-exec of the test binary.
const (
	capsEnvKeep = "SGO_CAPS_KEEP" // comma-separated capability numbers
	capsEnvBin  = "SGO_CAPS_BIN"  // the program to exec with them
	// capsEnvMemlock, when set, lowers RLIMIT_MEMLOCK to that many bytes
	// (lowering needs no privilege): Linux's usual 8 MiB, whatever this
	// machine's limit is, so the CAP_IPC_LOCK case always runs.
	capsEnvMemlock = "SGO_CAPS_MEMLOCK"
)

// init runs before TestMain: in the re-executed test binary it drops every
// capability outside SGO_CAPS_KEEP from the bounding set, as systemd's
// CapabilityBoundingSet does for a root service, and execs syngate, which
// then holds exactly those (a root exec gets the bounding set).
func init() {
	keep := os.Getenv(capsEnvKeep)
	if keep == "" {
		return
	}
	if err := dropAndExec(keep, os.Getenv(capsEnvBin), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "caps exec:", err)
		os.Exit(111)
	}
}

func dropAndExec(keep, bin string, args []string) error {
	if m := os.Getenv(capsEnvMemlock); m != "" {
		n, err := strconv.ParseUint(m, 10, 64)
		if err != nil {
			return fmt.Errorf("%s=%q: %w", capsEnvMemlock, m, err)
		}
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: n, Max: n}); err != nil {
			return fmt.Errorf("lower RLIMIT_MEMLOCK: %w", err)
		}
	}
	want := map[uintptr]bool{}
	for _, s := range strings.Split(keep, ",") {
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		want[uintptr(n)] = true
	}
	// The bounding set is per thread, and init runs locked to the main
	// thread, which execs below.
	for c := uintptr(0); c <= unix.CAP_LAST_CAP; c++ {
		if !want[c] {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
				return fmt.Errorf("drop capability %d: %w", c, err)
			}
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return err
	}
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SGO_CAPS_") {
			env = append(env, e)
		}
	}
	return syscall.Exec(bin, append([]string{bin}, args...), env)
}

// TestCapabilities runs syngate with exactly the unit's capabilities and
// spliced traffic flows; then without each one in turn, and syngate refuses
// to start. It is what the unit file's CapabilityBoundingSet rests on. It
// runs the XDP data path, the one that needs every capability of the unit
// (AF_XDP's locked memory needs CAP_IPC_LOCK; the TC data path does not).
func TestCapabilities(t *testing.T) {
	lab.RequireRoot(t)
	top, err := lab.NewTopology(t, lab.Options{NoOffloads: true, Prefix: "sgo-"})
	if err != nil {
		t.Fatal(err)
	}
	if err := top.PrepareGatewayXDP(); err != nil {
		t.Fatal(err)
	}
	serveConns(t, top.Backend, netip.AddrPortFrom(netip.IPv4Unspecified(), backendPort), func(c net.Conn) { io.Copy(c, c) })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// A bpffs of the test's own, so that pinning is part of what the
	// capabilities must allow (the unit pins under /sys/fs/bpf).
	pins := filepath.Join(dir, "bpffs")
	if err := os.Mkdir(pins, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", pins, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount a bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(pins, unix.MNT_DETACH) })
	cfg := filepath.Join(dir, "syngate.yaml")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`interfaces:
  - {name: %s, datapath: xdp}
  - {name: %s, datapath: xdp}
secret_file: %s
bpffs: %s
control: {socket: %s}
services:
  - name: web
    listen: %s
    backend: %s
`, top.GatewayClient.Name, top.GatewayBackend.Name, filepath.Join(dir, "secret"), filepath.Join(pins, "syngate"), filepath.Join(dir, "control.sock"),
		netip.AddrPortFrom(top.VIP4, servicePort), netip.AddrPortFrom(backendAddr(top), backendPort))), 0o600)
	if err != nil {
		t.Fatal(err)
	}

	start := func(name string, caps map[string]uintptr) (*lab.Daemon, string) {
		var nums []string
		for _, c := range caps {
			nums = append(nums, strconv.Itoa(int(c)))
		}
		t.Setenv(capsEnvKeep, strings.Join(nums, ","))
		t.Setenv(capsEnvBin, syngateBin)
		t.Setenv(capsEnvMemlock, strconv.Itoa(defaultMemlock))
		ready := filepath.Join(dir, name+".ready")
		d, err := lab.StartDaemon(top.Gateway, filepath.Join(dir, name+".log"), self, "run", "-c", cfg, "-ready-file", ready, "-log-format", "json")
		if err != nil {
			t.Fatal(err)
		}
		return d, ready
	}

	t.Run("unit set suffices", func(t *testing.T) {
		d, ready := start("all", unitCapabilities)
		defer d.Stop(10 * time.Second)
		if err := d.WaitFile(ready, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		// As the unit runs it: every log line is one JSON object.
		lines := 0
		for _, l := range strings.Split(strings.TrimSpace(d.Logs()), "\n") {
			var rec struct{ Time, Level, Msg string }
			if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Msg == "" || rec.Level == "" {
				t.Errorf("log line is not a slog JSON record: %q (%v)", l, err)
			}
			lines++
		}
		if lines < 3 {
			t.Errorf("only %d log lines", lines)
		}
		if _, err := os.Stat(filepath.Join(pins, "syngate")); err != nil {
			t.Errorf("nothing pinned: %v", err)
		}
		var want uint64
		for _, c := range unitCapabilities {
			want |= 1 << c
		}
		if got := capEff(t, d.PID()); got != want {
			t.Errorf("syngate's CapEff = %#x, want exactly %#x", got, want)
		}
		c, err := dial(top.Client, netip.AddrPortFrom(top.VIP4, servicePort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := []byte("through a gateway with five capabilities")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
			t.Fatalf("echo: %q %v\n%s", got, err, d.Logs())
		}
	})
	// check -host, with the same capabilities, tells before run does.
	t.Run("check -host", func(t *testing.T) {
		caps := map[string]uintptr{}
		for n, c := range unitCapabilities {
			if n != "CAP_NET_RAW" && n != "CAP_IPC_LOCK" {
				caps[n] = c
			}
		}
		var nums []string
		for _, c := range caps {
			nums = append(nums, strconv.Itoa(int(c)))
		}
		t.Setenv(capsEnvKeep, strings.Join(nums, ","))
		t.Setenv(capsEnvBin, syngateBin)
		t.Setenv(capsEnvMemlock, strconv.Itoa(defaultMemlock))
		d, err := lab.StartDaemon(top.Gateway, filepath.Join(dir, "check.log"), self, "check", "-host", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Stop(5 * time.Second)
		err = d.WaitReady(10*time.Second, func() bool { return false })
		if err == nil || !strings.Contains(err.Error(), "exited") {
			t.Fatalf("check -host did not finish: %v", err)
		}
		want := []string{"FAIL  CAP_NET_RAW", "FAIL  locked memory for the AF_XDP buffers", "ok    capabilities (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)", "ok    interface " + top.GatewayClient.Name, "ok    bpffs at"}
		for _, w := range want {
			if !strings.Contains(d.Logs(), w) {
				t.Errorf("check -host output lacks %q:\n%s", w, d.Logs())
			}
		}
	})
	for name := range unitCapabilities {
		t.Run("without "+name, func(t *testing.T) {
			caps := map[string]uintptr{}
			for n, c := range unitCapabilities {
				if n != name {
					caps[n] = c
				}
			}
			d, ready := start("no-"+name, caps)
			defer d.Stop(10 * time.Second)
			err := d.WaitFile(ready, 20*time.Second)
			if err == nil {
				t.Fatalf("syngate started without %s", name)
			}
			if !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), withoutReason[name]) {
				t.Fatalf("without %s: want an exit saying %q, got: %v", name, withoutReason[name], err)
			}
			t.Logf("without %s: %s", name, lastLine(d.Logs()))
		})
	}
}

// capEff reads a process's effective capabilities.
func capEff(t *testing.T, pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no CapEff")
	return 0
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
