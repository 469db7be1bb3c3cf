package flood

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/syngate/syngate/lab"
	"golang.org/x/sys/unix"
)

// Errors Start returns for configurations it refuses; they wrap more detail.
var (
	// ErrNotLab: the sending namespace is missing, was not made by the lab
	// package, no longer exists or is the host's own namespace.
	ErrNotLab = errors.New("flood: not a lab namespace")
	// ErrTarget: the target is outside the lab's documentation ranges.
	ErrTarget = errors.New("flood: target outside the lab address plan")
	// ErrSpoofPrefix: the spoofed sources are outside the ranges reserved
	// for them (SpoofV4, SpoofV6) or of another family than the target.
	ErrSpoofPrefix = errors.New("flood: spoof prefix not allowed")
	// ErrUnbounded: the packet count or the duration is missing or too large.
	ErrUnbounded = errors.New("flood: unbounded flood")
)

// LabPrefix starts the name of every namespace a flood may send from: the
// lab's default prefix, so only namespaces the lab tooling made qualify.
const LabPrefix = "sg-"

// MaxDuration caps Config.Duration; a lab flood longer than this is a
// mistake, not a measurement.
const MaxDuration = 10 * time.Minute

// The address ranges a flood may touch, as constants so no caller can
// widen them. Targets must sit in the lab's documentation ranges (RFC 5737,
// RFC 3849), where every lab address lives; spoofed sources come from the
// benchmarking range (RFC 2544) for IPv4 and a slice of the documentation
// range the lab plan leaves unused for IPv6, so they can never collide with
// a lab host or a real one.
const (
	TargetRangesText = "192.0.2.0/24 198.51.100.0/24 203.0.113.0/24 2001:db8::/32"
	SpoofV4          = "198.18.0.0/15"
	SpoofV6          = "2001:db8:ff00::/40"
)

var (
	targetRanges = parsePrefixes(TargetRangesText)
	spoofV4      = netip.MustParsePrefix(SpoofV4)
	spoofV6      = netip.MustParsePrefix(SpoofV6)
)

func parsePrefixes(s string) []netip.Prefix {
	var ps []netip.Prefix
	for _, f := range strings.Fields(s) {
		ps = append(ps, netip.MustParsePrefix(f))
	}
	return ps
}

// Config describes one bounded flood. Packets and Duration are both
// required: the flood stops at whichever comes first (or when its context
// ends).
type Config struct {
	// From is the lab namespace the frames leave from, normally the
	// topology's Client.
	From *lab.NS
	// Iface is the interface in From to send on; default lab.HostIf.
	Iface string
	// DstMAC is the next hop's MAC; nil resolves it from From's routing
	// and neighbour tables (the gateway, in the lab topologies).
	DstMAC net.HardwareAddr
	// Target is the VIP and port the SYNs go to.
	Target netip.AddrPort
	// SpoofPrefix holds the random source addresses; the zero value
	// means SpoofV4 or SpoofV6 by the target's family.
	SpoofPrefix netip.Prefix
	// Rate limits the flood in packets per second across all workers;
	// zero sends as fast as the machine allows.
	Rate int
	// Packets is the number of frames to attempt (sent plus errors).
	Packets uint64
	// Duration bounds the flood in time, at most MaxDuration.
	Duration time.Duration
	// Workers is the number of sending goroutines, each with its own
	// socket; zero means one per CPU.
	Workers int
	// CPUs, if set, pins worker i to CPU CPUs[i mod len(CPUs)]. A packet
	// socket's frames take a transmit queue chosen by the sending CPU
	// (XPS, else the CPU's index), and a veth runs its peer's receive
	// processing on the sending CPU: pinned senders say which CPU drives
	// which receive queue of the gateway.
	CPUs []int
}

// maxWorkers bounds Config.Workers: past the CPU count more senders only
// contend.
const maxWorkers = 64

// check validates cfg and fills its defaults.
func (cfg *Config) check() error {
	if cfg.Packets == 0 || cfg.Duration <= 0 {
		return fmt.Errorf("%w: need both a packet count and a duration (got %d packets, %v)", ErrUnbounded, cfg.Packets, cfg.Duration)
	}
	if cfg.Duration > MaxDuration {
		return fmt.Errorf("%w: duration %v is over %v", ErrUnbounded, cfg.Duration, MaxDuration)
	}
	if cfg.Rate < 0 || cfg.Workers < 0 || cfg.Workers > maxWorkers {
		return fmt.Errorf("flood: rate %d or workers %d out of range (workers at most %d)", cfg.Rate, cfg.Workers, maxWorkers)
	}
	for _, c := range cfg.CPUs {
		if c < 0 || c >= runtime.NumCPU() {
			return fmt.Errorf("flood: CPU %d out of range (%d CPUs)", c, runtime.NumCPU())
		}
	}
	if err := checkTarget(cfg.Target); err != nil {
		return err
	}
	if !cfg.SpoofPrefix.IsValid() {
		cfg.SpoofPrefix = spoofV4
		if cfg.Target.Addr().Is6() {
			cfg.SpoofPrefix = spoofV6
		}
	}
	if err := checkSpoof(cfg.SpoofPrefix, cfg.Target.Addr()); err != nil {
		return err
	}
	if cfg.Iface == "" {
		cfg.Iface = lab.HostIf
	}
	if cfg.DstMAC != nil && len(cfg.DstMAC) != 6 {
		return fmt.Errorf("flood: destination MAC %v is not Ethernet", cfg.DstMAC)
	}
	return checkNS(cfg.From)
}

func checkTarget(t netip.AddrPort) error {
	a := t.Addr()
	if !a.IsValid() || a.Is4In6() || t.Port() == 0 {
		return fmt.Errorf("%w: %v needs a plain IPv4 or IPv6 address and a port", ErrTarget, t)
	}
	for _, r := range targetRanges {
		if r.Contains(a) {
			return nil
		}
	}
	return fmt.Errorf("%w: %v is not in %s", ErrTarget, a, TargetRangesText)
}

func checkSpoof(p netip.Prefix, target netip.Addr) error {
	allowed := spoofV4
	if target.Is6() {
		allowed = spoofV6
	}
	if p.Addr().Is4In6() || p.Addr().Is6() != target.Is6() {
		return fmt.Errorf("%w: %v is not of the target's family", ErrSpoofPrefix, p)
	}
	if p.Bits() < allowed.Bits() || !allowed.Contains(p.Addr()) {
		return fmt.Errorf("%w: %v is not inside %v", ErrSpoofPrefix, p, allowed)
	}
	return nil
}

// checkNS makes sure ns is a live lab namespace and not the host's: the
// name the lab gives it, its bind mount still there, and a namespace
// inode different from the one init runs in.
func checkNS(ns *lab.NS) error {
	if ns == nil {
		return fmt.Errorf("%w: no namespace given", ErrNotLab)
	}
	name := ns.Name()
	if !strings.HasPrefix(name, LabPrefix) || strings.ContainsAny(name, "/") {
		return fmt.Errorf("%w: %q does not start with %q", ErrNotLab, name, LabPrefix)
	}
	if !lab.Exists(name) {
		return fmt.Errorf("%w: %s does not exist", ErrNotLab, name)
	}
	var nsStat unix.Stat_t
	if err := unix.Stat(ns.Path(), &nsStat); err != nil {
		return fmt.Errorf("%w: stat %s: %v", ErrNotLab, ns.Path(), err)
	}
	for _, host := range []string{"/proc/1/ns/net", "/proc/self/ns/net"} {
		var st unix.Stat_t
		if err := unix.Stat(host, &st); err != nil {
			if os.IsNotExist(err) || errors.Is(err, unix.EACCES) {
				continue
			}
			return fmt.Errorf("stat %s: %w", host, err)
		}
		if st.Dev == nsStat.Dev && st.Ino == nsStat.Ino {
			return fmt.Errorf("%w: %s is the host's namespace (%s)", ErrNotLab, name, host)
		}
	}
	return nil
}
