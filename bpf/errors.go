package bpf

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/flow"
)

// Sentinel errors callers branch on; returned errors wrap them with context.
var (
	// ErrPermission: the process lacks RequiredCapabilities.
	ErrPermission = errors.New("missing privileges (need " + capNames() + ")")
	// ErrNotSupported: the kernel lacks a feature syngate needs (BPF, BTF,
	// XDP, AF_XDP, a map type). Errors also wrap ebpf.ErrNotSupported when
	// the loader reported it.
	ErrNotSupported = errors.New("kernel feature not supported")
	// ErrVerifier: the kernel verifier rejected the program; the message
	// carries the tail of the verifier log.
	ErrVerifier = errors.New("program rejected by the verifier")
	// ErrUnknownInterface: no network interface has the given name.
	ErrUnknownInterface = errors.New("unknown interface")
	// ErrAlreadyAttached: the program is already attached to the interface.
	ErrAlreadyAttached = errors.New("already attached")
	// ErrNotAttached: Detach of an interface this Dataplane did not attach.
	ErrNotAttached = errors.New("not attached")
	// ErrPinPath: the pin directory is missing or not on a bpf filesystem.
	ErrPinPath = errors.New("pin path is not a directory on bpffs")
	// ErrPinnedIncompatible: a pinned map from an earlier run has another
	// layout (type, key, value or size); remove the pins to start fresh.
	ErrPinnedIncompatible = errors.New("pinned map incompatible with this program")
	// ErrNotFound: no such service, local address, socket or flow. It is
	// flow.ErrNotFound (as os.ErrNotExist is fs.ErrNotExist), so the engine
	// branches on it without importing this package.
	ErrNotFound = flow.ErrNotFound
	// ErrTooManyInterfaces: RegisterSocket for a new interface while
	// sockets of MaxInterfaces others are registered.
	ErrTooManyInterfaces = errors.New("too many interfaces with AF_XDP sockets")
	// ErrFlowTableFull: InstallFlow found the flow table at its
	// MaxFlows; nothing was evicted. It is flow.ErrTableFull.
	ErrFlowTableFull = flow.ErrTableFull
	// ErrInvalid: an argument (address, port, config value) is unusable.
	ErrInvalid = errors.New("invalid argument")
)

// Capability is a Linux capability by name and bit number.
type Capability struct {
	Name string
	Bit  int
}

// RequiredCapabilities are the capabilities Load and Attach need (kernel
// 5.8+): CAP_BPF to create maps and load the program, CAP_NET_ADMIN to
// attach XDP and for the networking helpers, CAP_PERFMON because without it
// the verifier refuses the program's packet pointer arithmetic ("pointer
// -= pointer prohibited"; e2e's TestCapabilities). Root has them all.
var RequiredCapabilities = []Capability{
	{Name: "CAP_BPF", Bit: unix.CAP_BPF},
	{Name: "CAP_NET_ADMIN", Bit: unix.CAP_NET_ADMIN},
	{Name: "CAP_PERFMON", Bit: unix.CAP_PERFMON},
}

func capNames() string {
	names := make([]string, len(RequiredCapabilities))
	for i, c := range RequiredCapabilities {
		names[i] = c.Name
	}
	return strings.Join(names, "+")
}

// CheckCapabilities reports which of RequiredCapabilities the process's
// effective set lacks, as an error wrapping ErrPermission, or nil.
func CheckCapabilities() error {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	eff, err := parseCapEff(string(status))
	if err != nil {
		return err
	}
	if missing := missingCapabilities(eff); len(missing) > 0 {
		return fmt.Errorf("effective capabilities lack %s: %w", strings.Join(missing, ", "), ErrPermission)
	}
	return nil
}

func parseCapEff(status string) (uint64, error) {
	for line := range strings.Lines(status) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("parse CapEff %q: %w", strings.TrimSpace(v), err)
			}
			return eff, nil
		}
	}
	return 0, errors.New("parse capabilities: no CapEff line in /proc/self/status")
}

func missingCapabilities(eff uint64) []string {
	var missing []string
	for _, c := range RequiredCapabilities {
		if eff&(1<<uint(c.Bit)) == 0 {
			missing = append(missing, c.Name)
		}
	}
	return missing
}
