package bpf

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Mode selects how the XDP program is attached to an interface.
type Mode int

const (
	// ModeAuto tries native (driver) mode and falls back to generic.
	ModeAuto Mode = iota
	// ModeNative requires driver support; it is the fast one.
	ModeNative
	// ModeGeneric runs after the kernel allocated an skb: slower, works anywhere.
	ModeGeneric
)

// String returns the mode's name as ParseMode accepts it.
func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// ParseMode parses "auto", "native" or "generic".
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "auto", "":
		return ModeAuto, nil
	case "native", "driver", "drv":
		return ModeNative, nil
	case "generic", "skb":
		return ModeGeneric, nil
	}
	return 0, fmt.Errorf("parse xdp mode %q: %w", s, ErrInvalid)
}

// RateLimit is the per-source-prefix SYN token bucket. A zero PerSecond
// disables it.
// The config package sets every default; here nothing is filled in.
type RateLimit struct {
	PerSecond uint64 // SYNs per second refilled per prefix; at most 1e9
	Burst     uint64 // bucket size, 1..1e9
	Prefix4   int    // IPv4 source prefix length, 1..32
	Prefix6   int    // IPv6 source prefix length, 1..128
}

// PortRange is an inclusive range of local ports. The zero value is empty.
type PortRange struct {
	First, Last uint16
}

// Config is fixed for the life of the loaded program (it is compiled into
// the program's read-only data, so disabled defenses cost nothing). The zero
// value loads a program with no defenses, no pinning and no local ports.
type Config struct {
	// PinPath is a directory on a bpf filesystem (e.g. /sys/fs/bpf/syngate)
	// where the stateful maps, the XDP links and the program are pinned,
	// and taken over by the next Load with the same path (see doc.go).
	// Load locks it for the life of the Dataplane. Empty disables pinning:
	// Close then detaches.
	PinPath string
	// DropSYNPayload drops SYNs that carry data, except those with a TCP
	// Fast Open option (RFC 7413 kind 34, or the experimental kind 254 with
	// magic 0xF989): a TFO client's SYN is answered like any other, with a
	// SYN-ACK acknowledging only the SYN, and the client sends its data
	// again at once instead of waiting for a SYN timeout.
	DropSYNPayload bool
	// DropBadFlags drops segments with impossible flags: none at all, SYN
	// with FIN or RST, FIN with RST, FIN/PSH/URG without ACK.
	DropBadFlags bool
	// SYNRateLimit limits SYNs per source prefix.
	SYNRateLimit RateLimit
	// LocalPorts is the range of source ports syngate uses towards backends;
	// segments to a local address (AddLocal) in this range are syngate's.
	LocalPorts PortRange
	// MaxFlows bounds the flow table; zero means spec.DefaultFlowsMax (a
	// million connections: one takes two entries). Entries are allocated on
	// demand; at the bound InstallFlow fails with ErrFlowTableFull and no
	// entry is ever evicted.
	MaxFlows int
	// Logger receives attach/detach events; nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) bpfConfig() (syngateConfig, error) {
	var bc syngateConfig
	if c.DropSYNPayload {
		bc.Flags |= cfgDropSYNPayload
	}
	if c.DropBadFlags {
		bc.Flags |= cfgDropBadFlags
	}
	if c.LocalPorts.First > c.LocalPorts.Last {
		return bc, fmt.Errorf("local ports %d-%d: %w", c.LocalPorts.First, c.LocalPorts.Last, ErrInvalid)
	}
	bc.LocalPortMin, bc.LocalPortMax = c.LocalPorts.First, c.LocalPorts.Last
	if c.LocalPorts == (PortRange{}) {
		bc.LocalPortMin = 1 // empty range: min > max matches no port
	}
	if c.MaxFlows < 0 {
		return bc, fmt.Errorf("max flows %d: %w", c.MaxFlows, ErrInvalid)
	}
	rl := c.SYNRateLimit
	if rl.PerSecond == 0 {
		return bc, nil
	}
	switch {
	case rl.PerSecond > 1e9, rl.Burst > 1e9, rl.Burst == 0:
		return bc, fmt.Errorf("syn rate limit %d/s burst %d: want a burst of 1 to 1e9: %w", rl.PerSecond, rl.Burst, ErrInvalid)
	case rl.Prefix4 < 1 || rl.Prefix4 > 32:
		return bc, fmt.Errorf("syn rate limit ipv4 prefix /%d: %w", rl.Prefix4, ErrInvalid)
	case rl.Prefix6 < 1 || rl.Prefix6 > 128:
		return bc, fmt.Errorf("syn rate limit ipv6 prefix /%d: %w", rl.Prefix6, ErrInvalid)
	}
	bc.Flags |= cfgSYNRateLimit
	bc.RlRatePerSec = rl.PerSecond
	bc.RlBurst = rl.Burst
	bc.RlFillNs = rl.Burst * 1e9 / rl.PerSecond
	bc.RlPrefix4 = uint8(rl.Prefix4)
	bc.RlPrefix6 = uint8(rl.Prefix6)
	return bc, nil
}

// Mirrors of the CFG_* flags in syngate.c.
const (
	cfgDropSYNPayload = 0x1
	cfgDropBadFlags   = 0x2
	cfgSYNRateLimit   = 0x4
)

// pinnedMaps are the maps whose state must survive a restart (see doc.go).
var pinnedMaps = []string{
	syngateMapServices, syngateMapLocals, syngateMapFlows, syngateMapRatelimit, syngateMapCounters,
	syngateMapStandbyAcks,
}

// mapLayouts pins the Go mirror of each map's key and value; Load refuses a
// program whose maps disagree.
var mapLayouts = map[string][2]any{
	syngateMapServices:       {syngateSvcKey{}, syngateSvcVal{}},
	syngateMapLocals:         {syngateLocalKey{}, uint32(0)},
	syngateMapFlows:          {syngateFlowKey{}, syngateFlowVal{}},
	syngateMapRatelimit:      {syngateRlKey{}, syngateRlVal{}},
	syngateMapCounters:       {uint32(0), syngateCounter{}},
	syngateMapXsks:           {uint32(0), uint32(0)},
	syngateMapIfslots:        {uint32(0), uint32(0)},
	syngateMapTxPorts:        {uint32(0), uint32(0)},
	syngateMapCookieKeys:     {uint32(0), syngateCookieState{}},
	syngateMapSynackScratch:  {uint32(0), syngateSynackWork{}},
	syngateMapStandbyAcks:    {syngateFlowKey{}, syngateStandbyAck{}},
	syngateMapStandbyScratch: {uint32(0), syngateStandbyBuf{}},
	syngateMapIcmpBucket:     {uint32(0), syngateIcmpBucket{}},
	syngateMapIcmpScratch:    {uint32(0), syngateIcmpScratch{}},
	syngateMapTcIfaces:       {uint32(0), uint32(0)},
	syngateMapTcRings:        {uint32(0), uint32(0)},
	syngateMapTcEngine:       {uint32(0), uint64(0)},
	syngateMapTcScratch:      {uint32(0), syngateTcRec{}},
}

// Dataplane is the loaded XDP program and its maps. Its methods are safe for
// concurrent use. Close detaches from every interface.
type Dataplane struct {
	objs syngateObjects
	log  *slog.Logger
	cfg  Config

	mu    sync.Mutex
	links map[int]attachment // by ifindex; keeps links referenced
	tc    map[int]attachment // TC (tcx ingress) links by ifindex; see tc.go
	slots map[int]ifSlot     // by ifindex; mirrors the ifslots map

	ckMu   sync.Mutex
	cookie syngateCookieState // mirrors the cookie_keys map

	// With PinPath: the pin directory's lock and the meta map; oldFlows
	// is the flow table a migration replaced, until MergeMigratedFlows.
	lockFD   int
	meta     *ebpf.Map
	oldFlows *ebpf.Map

	// hint counts the flow entries for the program's flow_hint (see
	// flowhint.go); nil when unavailable.
	hint *flowHint
}

// Limits of the AF_XDP socket map, mirrors of MAX_QUEUES and MAX_IFACES in
// syngate.c: sockets of at most MaxInterfaces interfaces, on receive queues
// below MaxQueues, can be registered at a time.
const (
	MaxQueues     = 64
	MaxInterfaces = 16
)

// ifSlot is an interface's block of MaxQueues entries in the socket map.
type ifSlot struct {
	slot   int
	queues uint64 // bit q: a socket is registered for queue q
}

type attachment struct {
	name string
	mode Mode
	link link.Link
	// tookOver: the program replaced an earlier one through a pinned link.
	tookOver bool
}

// Load checks the configuration, loads the program and creates (or, with
// Config.PinPath, reuses) its maps. It does not attach; see Attach.
func Load(cfg Config) (*Dataplane, error) {
	bc, err := cfg.bpfConfig()
	if err != nil {
		return nil, fmt.Errorf("load dataplane: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("load dataplane: remove memlock limit: %w", classify(err))
	}
	spec, err := loadSyngate()
	if err != nil {
		return nil, fmt.Errorf("load dataplane: %w", err)
	}
	if err := checkLayouts(spec); err != nil {
		return nil, fmt.Errorf("load dataplane: %w", err)
	}
	if err := spec.Variables[syngateVarCfg].Set(bc); err != nil {
		return nil, fmt.Errorf("load dataplane: set config: %w", err)
	}
	spec.Maps[syngateMapFlows].MaxEntries = uint32(cmp.Or(cfg.MaxFlows, defaultMaxFlows))
	d := &Dataplane{log: cfg.Logger, cfg: cfg, links: make(map[int]attachment), slots: make(map[int]ifSlot), lockFD: -1}
	if d.log == nil {
		d.log = slog.Default()
	}
	var opts ebpf.CollectionOptions
	if cfg.PinPath != "" {
		if err := checkBPFFS(cfg.PinPath); err != nil {
			return nil, fmt.Errorf("load dataplane: %w", err)
		}
		// The lock before anything in the directory is read or written.
		if d.lockFD, err = lockPinDir(cfg.PinPath); err != nil {
			return nil, fmt.Errorf("load dataplane: %w", err)
		}
		if err := d.openPins(spec); err != nil {
			d.closePins()
			return nil, fmt.Errorf("load dataplane: %w", err)
		}
		for _, name := range pinnedMaps {
			spec.Maps[name].Pinning = ebpf.PinByName
		}
		opts.Maps.PinPath = cfg.PinPath
	}
	if err := spec.LoadAndAssign(&d.objs, &opts); err != nil {
		d.closePins()
		return nil, fmt.Errorf("load dataplane: %w", classify(err))
	}
	if d.hint, err = openFlowHint(d.objs.FlowHint, d.objs.Flows); err != nil {
		// Only slower: every SYN the program answers looks the flow
		// table up.
		d.log.Warn("flow hint unavailable", "err", err)
	}
	return d, nil
}

// openPins opens the meta map and migrates pinned maps the program would
// not accept as they are. The lock is held.
func (d *Dataplane) openPins(spec *ebpf.CollectionSpec) error {
	var err error
	if d.meta, err = openMeta(d.cfg.PinPath); err != nil {
		return err
	}
	d.oldFlows, err = migratePins(d.cfg.PinPath, spec, d.meta, d.log)
	return err
}

// MergeMigratedFlows, after the program was replaced on every interface,
// carries over what the previous program recorded in a flow table Load
// migrated (FIN and RST flags, last-seen times) while it still ran, so
// closed connections expire on time. It returns how many entries changed;
// without a migration it does nothing.
func (d *Dataplane) MergeMigratedFlows() (int, error) {
	if d.oldFlows == nil {
		return 0, nil
	}
	n, err := mergeFlows(d.oldFlows, d.objs.Flows)
	d.oldFlows.Close()
	d.oldFlows = nil
	return n, err
}

// closePins releases the meta map and then the lock.
func (d *Dataplane) closePins() {
	if d.oldFlows != nil {
		d.oldFlows.Close()
		d.oldFlows = nil
	}
	if d.meta != nil {
		d.meta.Close()
		d.meta = nil
	}
	if d.lockFD >= 0 {
		unix.Close(d.lockFD)
		d.lockFD = -1
	}
}

func checkLayouts(spec *ebpf.CollectionSpec) error {
	for name, kv := range mapLayouts {
		ms, ok := spec.Maps[name]
		if !ok {
			return fmt.Errorf("map %s missing from the object", name)
		}
		if k := binary.Size(kv[0]); uint32(k) != ms.KeySize {
			return fmt.Errorf("map %s: key is %d bytes in C, %d in Go", name, ms.KeySize, k)
		}
		if v := binary.Size(kv[1]); uint32(v) != ms.ValueSize {
			return fmt.Errorf("map %s: value is %d bytes in C, %d in Go", name, ms.ValueSize, v)
		}
	}
	if n := spec.Maps[syngateMapIfslots].MaxEntries; n != MaxInterfaces {
		return fmt.Errorf("map %s: %d entries in C, MaxInterfaces is %d", syngateMapIfslots, n, MaxInterfaces)
	}
	if n := spec.Maps[syngateMapXsks].MaxEntries; n != MaxInterfaces*MaxQueues {
		return fmt.Errorf("map %s: %d entries in C, want MaxInterfaces*MaxQueues = %d", syngateMapXsks, n, MaxInterfaces*MaxQueues)
	}
	return nil
}

func checkBPFFS(dir string) error {
	var st unix.Statfs_t
	err := unix.Statfs(dir, &st)
	if errors.Is(err, unix.ENOENT) {
		// A missing pin directory on a bpffs (the usual /sys/fs/bpf/syngate
		// on a fresh machine) is created; anywhere else it is an error.
		var parent unix.Statfs_t
		if perr := unix.Statfs(filepath.Dir(dir), &parent); perr == nil && parent.Type == unix.BPF_FS_MAGIC {
			if err = os.Mkdir(dir, 0o700); err == nil {
				err = unix.Statfs(dir, &st)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w: %w", dir, ErrPinPath, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%s (mount one with `mount -t bpf bpf /sys/fs/bpf`): %w", dir, ErrPinPath)
	}
	return nil
}

// verifierTail is how many lines of the verifier log an error keeps.
const verifierTail = 20

// classify wraps a loader error with the sentinel a caller can act on.
func classify(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		log := ve.Log
		if len(log) > verifierTail {
			log = log[len(log)-verifierTail:]
		}
		return fmt.Errorf("%w: %w\n%s", ErrVerifier, err, strings.Join(log, "\n"))
	case errors.Is(err, ebpf.ErrMapIncompatible):
		return fmt.Errorf("%w: %w", ErrPinnedIncompatible, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return err
}

// Attach attaches the program to the named interface and lets the fast path
// redirect to it. ModeAuto falls back to generic mode when native fails.
//
// With Config.PinPath, an XDP link an earlier syngate left pinned for the
// interface is taken over: its program is replaced by this one atomically
// (the kernel swaps the pointer), so no packet of a spliced flow reaches
// the kernel during the switch. Otherwise the new link is pinned, and
// stays attached after Close.
func (d *Dataplane) Attach(ifname string, mode Mode) error {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("attach xdp to %s: %w: %w", ifname, ErrUnknownInterface, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.links[iface.Index]; ok {
		return fmt.Errorf("attach xdp to %s: %w", ifname, ErrAlreadyAttached)
	}
	// The redirect map first: the program may run on the interface as
	// soon as it is attached.
	idx := uint32(iface.Index)
	if err := d.objs.TxPorts.Put(idx, idx); err != nil {
		return fmt.Errorf("attach xdp to %s: add to redirect map: %w", ifname, classify(err))
	}
	if d.cfg.PinPath != "" {
		l, pinned, err := d.takeOver(ifname, iface.Index, mode)
		if err != nil {
			_ = d.objs.TxPorts.Delete(idx)
			return fmt.Errorf("attach xdp to %s: %w", ifname, err)
		}
		if l != nil {
			if err := d.pinProgram(); err != nil {
				d.log.Warn("pin program", "err", err)
			}
			d.links[iface.Index] = attachment{name: ifname, mode: pinned, link: l, tookOver: true}
			d.log.Info("xdp program replaced through the pinned link", "interface", ifname, "mode", pinned.String())
			return nil
		}
	}
	var l link.Link
	switch mode {
	case ModeNative:
		l, err = d.attach(iface.Index, link.XDPDriverMode)
	case ModeGeneric:
		l, err = d.attach(iface.Index, link.XDPGenericMode)
	case ModeAuto:
		mode = ModeNative
		l, err = d.attach(iface.Index, link.XDPDriverMode)
		if err != nil {
			d.log.Info("native xdp failed, falling back to generic", "interface", ifname, "error", err)
			mode = ModeGeneric
			l, err = d.attach(iface.Index, link.XDPGenericMode)
		}
	default:
		return fmt.Errorf("attach xdp to %s: %v: %w", ifname, mode, ErrInvalid)
	}
	if err != nil {
		_ = d.objs.TxPorts.Delete(idx)
		return fmt.Errorf("attach xdp to %s in %v mode: %w", ifname, mode, classify(err))
	}
	if d.cfg.PinPath != "" {
		if err := d.pinAttachment(ifname, l, mode); err != nil {
			_ = l.Close()
			_ = d.objs.TxPorts.Delete(idx)
			return fmt.Errorf("attach xdp to %s: %w", ifname, err)
		}
	}
	d.links[iface.Index] = attachment{name: ifname, mode: mode, link: l}
	d.log.Info("xdp attached", "interface", ifname, "mode", mode.String())
	return nil
}

func (d *Dataplane) attach(ifindex int, flags link.XDPAttachFlags) (link.Link, error) {
	return link.AttachXDP(link.XDPOptions{Program: d.objs.SyngateXdp, Interface: ifindex, Flags: flags})
}

// Attached returns the names of the interfaces the program is attached to
// and the mode each one got.
func (d *Dataplane) Attached() map[string]Mode {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]Mode, len(d.links))
	for _, a := range d.links {
		out[a.name] = a.mode
	}
	return out
}

// AddRedirectPort lets the program redirect spliced packets out of the
// named interface before it is attached there. Call it for every interface
// before attaching to any: while a take-over replaces the program one
// interface after the other, the new program, already running on the
// first, must reach the others.
func (d *Dataplane) AddRedirectPort(ifname string) error {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("add redirect port %s: %w: %w", ifname, ErrUnknownInterface, err)
	}
	idx := uint32(iface.Index)
	if err := d.objs.TxPorts.Put(idx, idx); err != nil {
		return fmt.Errorf("add redirect port %s: %w", ifname, classify(err))
	}
	return nil
}

// TookOver reports whether the program replaced an earlier syngate's on the
// named interface through its pinned link.
func (d *Dataplane) TookOver(ifname string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.links {
		if a.name == ifname {
			return a.tookOver
		}
	}
	for _, a := range d.tc {
		if a.name == ifname {
			return a.tookOver
		}
	}
	return false
}

// Detach removes the program from the named interface (and its pinned
// link).
func (d *Dataplane) Detach(ifname string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for idx, a := range d.links {
		if a.name == ifname {
			return d.detach(idx, a)
		}
	}
	return fmt.Errorf("detach xdp from %s: %w", ifname, ErrNotAttached)
}

func (d *Dataplane) detach(idx int, a attachment) error {
	delete(d.links, idx)
	var err error
	if d.cfg.PinPath != "" {
		err = a.link.Unpin()
		if d.meta != nil {
			_ = d.meta.Delete(newMetaKey("mode/" + a.name))
		}
	}
	err = errors.Join(err, a.link.Close())
	if derr := d.objs.TxPorts.Delete(uint32(idx)); derr != nil && !errors.Is(derr, ebpf.ErrKeyNotExist) && err == nil {
		err = derr
	}
	if err != nil {
		return fmt.Errorf("detach xdp from %s: %w", a.name, err)
	}
	d.log.Info("xdp detached", "interface", a.name)
	return nil
}

// Close releases the program and maps. Without Config.PinPath it detaches
// from every interface first. With it the data path stays as it is: the
// pinned links keep the program attached, spliced flows keep flowing, and
// the services' SYNs are answered by standby cookies (Service.
// StandbyCookies) until the next Load takes over; then the lock is
// released.
func (d *Dataplane) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for idx, a := range d.links {
		if d.cfg.PinPath == "" {
			errs = append(errs, d.detach(idx, a))
			continue
		}
		delete(d.links, idx)
		errs = append(errs, a.link.Close()) // the pin keeps it attached
	}
	errs = append(errs, d.closeTC()...)
	errs = append(errs, d.hint.close())
	errs = append(errs, d.objs.Close())
	d.closePins()
	return errors.Join(errs...)
}

// Unpin detaches from every interface, this process's and those an earlier
// syngate left pinned, and removes everything pinned in the pin directory
// (an uninstall: spliced connections break). The maps live on until Close.
// It is a no-op without Config.PinPath.
func (d *Dataplane) Unpin() error {
	if d.cfg.PinPath == "" {
		return nil
	}
	d.mu.Lock()
	var errs []error
	for idx, a := range d.links {
		errs = append(errs, d.detach(idx, a))
	}
	for idx, a := range d.tc {
		errs = append(errs, d.detachTC(idx, a))
	}
	d.mu.Unlock()
	if d.objs.SyngateXdp != nil {
		_ = d.objs.SyngateXdp.Unpin()
	}
	for _, m := range []*ebpf.Map{d.objs.Services, d.objs.Locals, d.objs.Flows, d.objs.Ratelimit, d.objs.Counters, d.objs.StandbyAcks, d.meta} {
		if m != nil {
			if err := m.Unpin(); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, removeAll(d.cfg.PinPath, d.log))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unpin %s: %w", d.cfg.PinPath, err)
	}
	return nil
}
