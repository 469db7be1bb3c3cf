package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// What a pin directory holds besides the maps named in pinnedMaps.
const (
	// metaPin is a small map of layout generations and attach modes (see
	// metaKey); it outlives every program.
	metaPin = "meta"
	// programPin is the program the links run, for inspection (bpftool).
	programPin = "program"
	// linkPinPrefix starts the pin of the XDP link of one interface,
	// followed by the interface's name.
	linkPinPrefix = "link_"
	// migratePrefix marks a migrated map pinned next to the one it
	// replaces, for the instant before it is renamed over it (bpffs names
	// cannot contain dots).
	migratePrefix = "migrating_"
)

// layoutGen is the layout generation of each pinned map's key and value.
// A map whose pinned generation equals this one is understood: when only
// its size or the length of its value differ, its entries are copied into
// a map of the new shape, keys as they are and values by their common
// leading bytes (a value grown at its end gets zeroes there). So a field
// appended at the end of a value (e.g. struct flow_val) keeps the
// generation; any other change to a key or value (a field moved, resized
// or reinterpreted) must bump it, and a newer generation is refused with a
// message naming `syngate reset`.
var layoutGen = map[string]uint64{
	syngateMapServices:    1,
	syngateMapLocals:      1,
	syngateMapFlows:       1,
	syngateMapRatelimit:   1,
	syngateMapCounters:    1,
	syngateMapStandbyAcks: 1,
}

// metaKeyLen is the size of a key of the meta map: "gen/<map>" or
// "mode/<interface>", zero padded.
const metaKeyLen = 32

type metaKey [metaKeyLen]byte

func newMetaKey(s string) metaKey {
	var k metaKey
	copy(k[:], s)
	return k
}

var metaSpec = &ebpf.MapSpec{
	Name: "syngate_meta", Type: ebpf.Hash, KeySize: metaKeyLen, ValueSize: 8, MaxEntries: 128,
}

// ErrLocked means another syngate holds the pin directory: it runs (or is
// still shutting down) and owns the maps, links and program there.
var ErrLocked = errors.New("pin directory in use by another syngate")

// lockPinDir takes an exclusive lock on the pin directory itself, held until
// the returned fd is closed (or the process dies, however it dies), before
// anything in it is read or written: a second instance fails without
// touching the running one's maps.
func lockPinDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open pin directory %s: %w", dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return -1, fmt.Errorf("%s: %w (stop the running syngate first)", dir, ErrLocked)
		}
		return -1, fmt.Errorf("lock pin directory %s: %w", dir, err)
	}
	return fd, nil
}

// openMeta opens the pinned meta map, creating and pinning it if missing.
func openMeta(dir string) (*ebpf.Map, error) {
	path := filepath.Join(dir, metaPin)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err == nil {
		if cerr := metaSpec.Compatible(m); cerr != nil {
			m.Close()
			return nil, fmt.Errorf("pinned %s: %w: %w", path, ErrPinnedIncompatible, cerr)
		}
		return m, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open pinned %s: %w", path, err)
	}
	if m, err = ebpf.NewMap(metaSpec); err != nil {
		return nil, fmt.Errorf("create %s: %w", path, classify(err))
	}
	if err := m.Pin(path); err != nil {
		m.Close()
		return nil, fmt.Errorf("pin %s: %w", path, err)
	}
	return m, nil
}

func metaGet(m *ebpf.Map, key string) (uint64, bool) {
	var v uint64
	if err := m.Lookup(newMetaKey(key), &v); err != nil {
		return 0, false
	}
	return v, true
}

// migratePins makes every pinned map fit spec before the program is loaded
// against them: maps of a known generation whose size or value length
// changed are copied into new ones pinned in their place; a map of an
// unknown generation is refused. Maps pinned before the meta map existed
// are generation 1. It records the generations it leaves behind.
//
// It returns the old flow table when that was migrated: the running
// program keeps updating it until the link update (see mergeFlows).
func migratePins(dir string, spec *ebpf.CollectionSpec, meta *ebpf.Map, log *slog.Logger) (oldFlows *ebpf.Map, err error) {
	defer func() {
		if err != nil && oldFlows != nil {
			oldFlows.Close()
			oldFlows = nil
		}
	}()
	for _, name := range pinnedMaps {
		path := filepath.Join(dir, name)
		old, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue // the loader creates and pins it
		}
		if err != nil {
			return oldFlows, fmt.Errorf("open pinned %s: %w", path, err)
		}
		gen, ok := metaGet(meta, "gen/"+name)
		if !ok {
			gen = 1
		}
		migrated, err := migrateMap(path, name, old, gen, spec.Maps[name], log)
		if migrated && name == syngateMapFlows {
			oldFlows = old
		} else {
			old.Close()
		}
		if err != nil {
			return oldFlows, err
		}
	}
	for _, name := range pinnedMaps {
		if err := meta.Put(newMetaKey("gen/"+name), layoutGen[name]); err != nil {
			return oldFlows, fmt.Errorf("record layout of %s: %w", name, err)
		}
	}
	return oldFlows, nil
}

// mergeFlows carries over what the previous program recorded in the old
// flow table between the copy and the link update: FIN and RST flags, the
// last-seen time and the tracked sequence state (packet and byte counts are
// not merged). Copies are marked for resync (markResync), so the new
// program catches up with busy flows by itself; the merge matters for flows
// that went quiet meanwhile (a FIN the old program saw last). Its lookup and
// update are not atomic against the new program, which already runs: a
// rewritten tracked entry is marked for resync again, so what it loses is
// re-learned instead of leaving the state behind for good. Entries are read
// by their common leading bytes, as copyEntries copies them.
func mergeFlows(old, cur *ebpf.Map) (int, error) {
	var (
		k, v []byte
		n    int
	)
	it := old.Iterate()
	for it.Next(&k, &v) {
		var ov, nv syngateFlowVal
		if err := decodePrefix(v, &ov); err != nil {
			return n, err
		}
		if err := cur.Lookup(k, &nv); err != nil {
			continue // expired or evicted meanwhile
		}
		merged := nv
		merged.Flags |= ov.Flags
		merged.LastSeenNs = max(nv.LastSeenNs, ov.LastSeenNs)
		if ov.Flags&nv.Flags&flowTracked != 0 {
			mergeTracking(&merged, &ov)
		}
		if merged == nv {
			continue
		}
		if merged.Flags&flowTracked != 0 {
			// The update writes the whole value as read above: whatever
			// the new program learned since is lost, and the state may
			// lag again. The program re-learns it from the next segments.
			merged.Flags |= flowResync
		}
		nv = merged
		if err := cur.Update(k, &nv, ebpf.UpdateExist); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("merge flow: %w", err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("merge flows: %w", err)
	}
	return n, nil
}

// flowFlagsOffset is where struct flow_val's flags byte lies.
var flowFlagsOffset = int(unsafe.Offsetof(syngateFlowVal{}.Flags))

// markResync marks a copied flow value whose sequence state is tracked as
// possibly lagging (FLOW_F_RESYNC): the previous program goes on moving
// the original until the link update, and judged against the copy a busy
// connection's segments would all be out of window, for good.
func markResync(v []byte) {
	if len(v) > flowFlagsOffset && v[flowFlagsOffset]&flowTracked != 0 {
		v[flowFlagsOffset] |= flowResync
	}
}

// decodePrefix decodes b into v by their common leading bytes.
func decodePrefix(b []byte, v *syngateFlowVal) error {
	buf := make([]byte, binary.Size(v))
	copy(buf, b)
	_, err := binary.Decode(buf, binary.NativeEndian, v)
	return err
}

func migrateMap(path, name string, old *ebpf.Map, gen uint64, ms *ebpf.MapSpec, log *slog.Logger) (migrated bool, err error) {
	if gen != layoutGen[name] {
		return false, fmt.Errorf("pinned map %s has layout generation %d, this syngate understands %d: %w "+
			"(`syngate reset -c FILE` detaches syngate and removes its pins, dropping the spliced connections)",
			path, gen, layoutGen[name], ErrPinnedIncompatible)
	}
	cerr := ms.Compatible(old)
	if cerr == nil {
		return false, nil
	}
	if !sameKind(old.Type(), ms.Type) || old.KeySize() != ms.KeySize {
		return false, fmt.Errorf("pinned map %s: %w: %w (`syngate reset -c FILE` detaches syngate and removes its pins, dropping the spliced connections)",
			path, ErrPinnedIncompatible, cerr)
	}
	cp := ms.Copy()
	cp.Pinning = ebpf.PinNone
	nm, err := ebpf.NewMap(cp)
	if err != nil {
		return false, fmt.Errorf("migrate %s: create: %w", path, classify(err))
	}
	defer nm.Close()
	var fix func([]byte)
	if name == syngateMapFlows {
		fix = markResync
	}
	n, err := copyEntries(old, nm, fix)
	if err != nil {
		return false, fmt.Errorf("migrate %s: %w", path, err)
	}
	// Pin beside the old map, then rename over it: the path always names
	// a complete map.
	tmp := filepath.Join(filepath.Dir(path), migratePrefix+name)
	_ = os.Remove(tmp)
	if err := nm.Pin(tmp); err != nil {
		return false, fmt.Errorf("migrate %s: pin: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return false, fmt.Errorf("migrate %s: replace pin: %w", path, err)
	}
	if ms.Type != ebpf.PerCPUArray && ms.Type != ebpf.Array && n > int(ms.MaxEntries) {
		log.Warn("pinned map migrated into a smaller one: entries beyond its size were dropped (their connections break)",
			"map", name, "entries", n, "max_entries", ms.MaxEntries)
	}
	log.Info("pinned map migrated", "map", name, "change", cerr.Error(), "entries", n)
	return true, nil
}

// sameKind reports whether entries of a map of type a can be copied into
// one of type b: the same type, or a hash and an LRU hash (the flow table
// was an LRU once).
func sameKind(a, b ebpf.MapType) bool {
	hash := func(t ebpf.MapType) bool { return t == ebpf.Hash || t == ebpf.LRUHash }
	return a == b || hash(a) && hash(b)
}

// copyEntries copies every entry of from into to: keys as they are, values
// by their common leading bytes, then passed to fix unless it is nil. Arrays
// are copied by index up to the smaller of the two sizes.
func copyEntries(from, to *ebpf.Map, fix func([]byte)) (int, error) {
	vs := int(to.ValueSize())
	fit := func(v []byte) []byte {
		out := make([]byte, vs)
		copy(out, v)
		if fix != nil {
			fix(out)
		}
		return out
	}
	switch from.Type() {
	case ebpf.PerCPUArray:
		if from.ValueSize() != to.ValueSize() {
			return 0, fmt.Errorf("per-CPU values changed size (%d to %d)", from.ValueSize(), to.ValueSize())
		}
		n := 0
		for i := uint32(0); i < min(from.MaxEntries(), to.MaxEntries()); i++ {
			var v []counterBytes
			if err := from.Lookup(i, &v); err != nil {
				return n, fmt.Errorf("read entry %d: %w", i, err)
			}
			if err := to.Put(i, v); err != nil {
				return n, fmt.Errorf("write entry %d: %w", i, err)
			}
			n++
		}
		return n, nil
	case ebpf.Array:
		n := 0
		for i := uint32(0); i < min(from.MaxEntries(), to.MaxEntries()); i++ {
			var v []byte
			if err := from.Lookup(i, &v); err != nil {
				return n, fmt.Errorf("read entry %d: %w", i, err)
			}
			if err := to.Put(i, fit(v)); err != nil {
				return n, fmt.Errorf("write entry %d: %w", i, err)
			}
			n++
		}
		return n, nil
	}
	var (
		k, v []byte
		n    int
	)
	it := from.Iterate()
	for it.Next(&k, &v) {
		if err := to.Put(k, fit(v)); err != nil {
			if errors.Is(err, unix.E2BIG) {
				// A smaller hash that is full: the rest do not fit.
				// Counted, so the caller warns; never a refusal.
				n++
				continue
			}
			return n, fmt.Errorf("write entry: %w", err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("read entries: %w", err)
	}
	return n, nil
}

// counterBytes is one CPU's value of the counters map, copied as bytes.
type counterBytes [16]byte

func (d *Dataplane) linkPath(ifname string) string {
	return filepath.Join(d.cfg.PinPath, linkPinPrefix+ifname)
}

// takeOver replaces the program of the pinned XDP link of ifname, if there
// is one for this interface and mode, and returns it; the kernel swaps the
// program atomically, so no packet sees neither. A pinned link that does
// not fit (its interface is gone, or another mode was asked for) is removed,
// which detaches its program, and nil returned.
func (d *Dataplane) takeOver(ifname string, ifindex int, mode Mode) (link.Link, Mode, error) {
	path := d.linkPath(ifname)
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open pinned link %s: %w", path, err)
	}
	pinned := ModeAuto
	if v, ok := metaGet(d.meta, "mode/"+ifname); ok {
		pinned = Mode(v)
	}
	why := ""
	info, err := l.Info()
	switch {
	case err != nil:
		why = "unreadable: " + err.Error()
	case info.XDP() == nil || int(info.XDP().Ifindex) != ifindex:
		why = "interface gone or replaced"
	case mode != ModeAuto && mode != pinned:
		why = fmt.Sprintf("attached in %v mode, %v asked for", pinned, mode)
	}
	if why == "" {
		if err := l.Update(d.objs.SyngateXdp); err != nil {
			why = "update failed: " + err.Error()
		} else {
			return l, pinned, nil
		}
	}
	d.log.Warn("pinned xdp link replaced by a new attachment", "interface", ifname, "reason", why)
	uerr := l.Unpin()
	cerr := l.Close()
	if err := errors.Join(uerr, cerr); err != nil {
		return nil, 0, fmt.Errorf("remove pinned link %s: %w", path, err)
	}
	return nil, 0, nil
}

// pinAttachment pins a new link and records its mode.
func (d *Dataplane) pinAttachment(ifname string, l link.Link, mode Mode) error {
	path := d.linkPath(ifname)
	_ = os.Remove(path)
	if err := l.Pin(path); err != nil {
		return fmt.Errorf("pin xdp link of %s: %w", ifname, err)
	}
	if err := d.meta.Put(newMetaKey("mode/"+ifname), uint64(mode)); err != nil {
		return fmt.Errorf("record xdp mode of %s: %w", ifname, err)
	}
	return d.pinProgram()
}

// pinProgram pins the running program for inspection, replacing the
// previous one's pin.
func (d *Dataplane) pinProgram() error {
	path := filepath.Join(d.cfg.PinPath, programPin)
	if d.objs.SyngateXdp.IsPinned() {
		return nil
	}
	_ = os.Remove(path)
	if err := d.objs.SyngateXdp.Pin(path); err != nil {
		return fmt.Errorf("pin program: %w", err)
	}
	return nil
}

// PinnedInterfaces lists the interfaces whose XDP link is pinned in the
// pin directory, attached by this process or left by an earlier one.
func (d *Dataplane) PinnedInterfaces() ([]string, error) {
	if d.cfg.PinPath == "" {
		return nil, nil
	}
	return pinnedLinks(d.cfg.PinPath)
}

func pinnedLinks(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents {
		if name, ok := strings.CutPrefix(e.Name(), linkPinPrefix); ok {
			out = append(out, name)
		}
	}
	return out, nil
}

// DetachPinned removes the pinned XDP link of ifname, which detaches the
// program from it, whether this process or an earlier one attached it.
func (d *Dataplane) DetachPinned(ifname string) error {
	d.mu.Lock()
	for idx, a := range d.links {
		if a.name == ifname {
			err := d.detach(idx, a)
			d.mu.Unlock()
			return err
		}
	}
	d.mu.Unlock()
	if err := removeLink(d.linkPath(ifname)); err != nil {
		return err
	}
	_ = d.meta.Delete(newMetaKey("mode/" + ifname))
	d.log.Info("xdp detached", "interface", ifname)
	return nil
}

// removeLink unpins a pinned link and closes it: with no other reference
// the kernel detaches its program.
func removeLink(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// Not a link we can open (e.g. its interface is gone): drop the pin.
		if rerr := os.Remove(path); rerr != nil {
			return fmt.Errorf("remove pinned link %s: %w", path, errors.Join(err, rerr))
		}
		return nil
	}
	err = errors.Join(l.Unpin(), l.Close())
	if err != nil {
		return fmt.Errorf("remove pinned link %s: %w", path, err)
	}
	return nil
}

// Reset detaches syngate from every interface it left attached in the pin
// directory dir and removes everything pinned there (the uninstall, or the
// way out of a layout this version cannot understand). Spliced connections
// break. It takes the directory's lock, so it fails while a syngate runs.
// A missing directory is not an error.
func Reset(dir string, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := checkBPFFS(dir); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	fd, err := lockPinDir(dir)
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	defer unix.Close(fd)
	return removeAll(dir, log)
}

// removeAll unpins every link (detaching it) and then every other pin in
// dir, and removes dir. The caller holds the lock.
func removeAll(dir string, log *slog.Logger) error {
	ifaces, err := pinnedLinks(dir)
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	var errs []error
	for _, name := range ifaces {
		if err := removeLink(filepath.Join(dir, linkPinPrefix+name)); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("xdp detached", "interface", name)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("reset: list %s: %w", dir, err))...)
	}
	// TC links the same way: closing the last descriptor detaches at once,
	// where removing a pin alone leaves the detach to a work queue (the
	// program would still answer for a moment after reset returns).
	for _, e := range ents {
		if name, ok := strings.CutPrefix(e.Name(), tcLinkPinPrefix); ok {
			if err := removeLink(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
				continue
			}
			log.Info("tc detached", "interface", name)
		}
	}
	ents, err = os.ReadDir(dir)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("reset: list %s: %w", dir, err))...)
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("reset: %w", err))
		}
	}
	// The directory itself goes too, unless it is a mount point (a
	// dedicated bpffs) or not empty.
	_ = os.Remove(dir)
	return errors.Join(errs...)
}

// mergeTracking moves cur's tracked sequence state forward to what old saw,
// edge by edge, in sequence-space order: a copy can only lag, never lead.
func mergeTracking(cur, old *syngateFlowVal) {
	cur.SeqEnd = seqMax(cur.SeqEnd, old.SeqEnd)
	cur.AckMax = seqMax(cur.AckMax, old.AckMax)
	cur.WinEnd = seqMax(cur.WinEnd, old.WinEnd)
	cur.WinMax = max(cur.WinMax, old.WinMax)
	if old.Flags&flowFIN != 0 {
		cur.FinEnd = old.FinEnd
	}
	if old.Flags&flowTS != 0 {
		cur.TsRecent = seqMax(cur.TsRecent, old.TsRecent)
	}
}

// seqMax is the later of two sequence numbers (or timestamps), modulo 2^32.
func seqMax(a, b uint32) uint32 {
	if int32(b-a) > 0 {
		return b
	}
	return a
}
