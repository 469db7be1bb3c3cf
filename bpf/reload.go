package bpf

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// Filters are the settings compiled into the program's read-only data
// that SetFilters can change while it runs.
type Filters struct {
	DropSYNPayload bool
	DropBadFlags   bool
	SYNRateLimit   RateLimit
}

// Filters returns the filters of the running program.
func (d *Dataplane) Filters() Filters {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Filters{DropSYNPayload: d.cfg.DropSYNPayload, DropBadFlags: d.cfg.DropBadFlags, SYNRateLimit: d.cfg.SYNRateLimit}
}

// SetFilters replaces the running programs (XDP and TC) by ones compiled
// with f, sharing every map with them (flows, services, sockets, cookie
// keys, counters): the new programs are loaded next to the old ones, then
// each interface's XDP and TC link is updated, which the kernel does
// atomically, as a take-over does; no packet meets neither program. If a
// link update fails, the links already updated go back to the old programs
// and the error is returned: the old filters stay in force everywhere.
func (d *Dataplane) SetFilters(f Filters) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := d.cfg
	next.DropSYNPayload, next.DropBadFlags, next.SYNRateLimit = f.DropSYNPayload, f.DropBadFlags, f.SYNRateLimit
	bc, err := next.bpfConfig()
	if err != nil {
		return fmt.Errorf("set filters: %w", err)
	}
	spec, err := loadSyngate()
	if err != nil {
		return fmt.Errorf("set filters: %w", err)
	}
	if err := spec.Variables[syngateVarCfg].Set(bc); err != nil {
		return fmt.Errorf("set filters: set config: %w", err)
	}
	repl := d.mapsByName()
	for name := range spec.Maps {
		if _, ok := repl[name]; !ok && name != ".rodata" {
			// A map the new program would get fresh, its state lost.
			return fmt.Errorf("set filters: map %s would not be shared (add it to mapsByName)", name)
		}
	}
	for name, m := range repl {
		// The spec must describe the maps as they are (the flow table's
		// size is the config's).
		spec.Maps[name].MaxEntries = m.MaxEntries()
	}
	var progs syngatePrograms
	if err := spec.LoadAndAssign(&progs, &ebpf.CollectionOptions{MapReplacements: repl}); err != nil {
		return fmt.Errorf("set filters: load program: %w", classify(err))
	}
	// Every link of this process moves to the new programs: the XDP ones
	// and the TC ones (the TC program reads the same read-only data).
	type update struct {
		a        attachment
		old, new *ebpf.Program
	}
	var todo []update
	for _, a := range d.links {
		todo = append(todo, update{a, d.objs.SyngateXdp, progs.SyngateXdp})
	}
	for _, a := range d.tc {
		todo = append(todo, update{a, d.objs.SyngateTc, progs.SyngateTc})
	}
	for i, u := range todo {
		if err := u.a.link.Update(u.new); err != nil {
			var rerr error
			for _, done := range todo[:i] {
				rerr = errors.Join(rerr, done.a.link.Update(done.old))
			}
			progs.Close()
			if rerr != nil {
				return fmt.Errorf("set filters: update the link of %s: %w (and putting the old program back: %w)", u.a.name, err, rerr)
			}
			return fmt.Errorf("set filters: update the link of %s: %w (the old programs run on every interface)", u.a.name, classify(err))
		}
	}
	old := d.objs.SyngateXdp
	if d.cfg.PinPath != "" && old.IsPinned() {
		// The pin names the program the links run, for inspection.
		if err := old.Unpin(); err != nil {
			d.log.Warn("unpin the replaced program", "err", err)
		}
		if err := progs.SyngateXdp.Pin(filepath.Join(d.cfg.PinPath, programPin)); err != nil {
			d.log.Warn("pin program", "err", err)
		}
	}
	oldTC := d.objs.SyngateTc
	d.objs.SyngateXdp, d.objs.SyngateTc = progs.SyngateXdp, progs.SyngateTc
	d.cfg = next
	old.Close()
	oldTC.Close()
	d.log.Info("programs replaced with new filters", "xdp_links", len(d.links), "tc_links", len(d.tc),
		"drop_syn_payload", f.DropSYNPayload, "drop_bad_flags", f.DropBadFlags, "syn_rate_limit", f.SYNRateLimit.PerSecond)
	return nil
}

// mapsByName lists the loaded maps by their names in the object, the
// read-only data (the filters themselves) excepted.
func (d *Dataplane) mapsByName() map[string]*ebpf.Map {
	m := d.objs.syngateMaps
	return map[string]*ebpf.Map{
		syngateMapCookieKeys: m.CookieKeys, syngateMapCounters: m.Counters, syngateMapFlows: m.Flows, syngateMapFlowHint: m.FlowHint,
		syngateMapIcmpBucket: m.IcmpBucket, syngateMapIcmpScratch: m.IcmpScratch, syngateMapIfslots: m.Ifslots,
		syngateMapLocals: m.Locals, syngateMapRatelimit: m.Ratelimit, syngateMapServices: m.Services,
		syngateMapStandbyAcks: m.StandbyAcks, syngateMapStandbyScratch: m.StandbyScratch,
		syngateMapSynackScratch: m.SynackScratch, syngateMapTcIfaces: m.TcIfaces, syngateMapTcRings: m.TcRings,
		syngateMapTcEngine: m.TcEngine, syngateMapTcScratch: m.TcScratch, syngateMapTxPorts: m.TxPorts, syngateMapXsks: m.Xsks,
	}
}
