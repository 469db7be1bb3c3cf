package bpf

import (
	"testing"

	"github.com/cilium/ebpf"
)

// TestSetFilters replaces the running program with new filters: the link
// runs the new program, which shares the maps (the services, the socket
// map and the counters stay) and applies the new filters.
func TestSetFilters(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	addVeth(t, 0)
	d := testDataplane(t, Config{})
	withSocket(t, d)
	if err := d.Attach("sgtest0", ModeGeneric); err != nil {
		t.Fatal(err)
	}
	if err := d.AttachTC("sgtest1"); err != nil {
		t.Fatal(err)
	}
	oldTC := progID(t, d.objs.SyngateTc)
	badFlags := frame(t, pkt{src: client4, dst: svc4, flags: "SF"})
	synData := frame(t, pkt{src: client4, dst: svc4, flags: "S", payload: []byte("hello")})
	if r := mustRun(t, d, badFlags); r.verdict == VerdictDropBadFlags {
		t.Fatalf("SYN+FIN dropped before the filter is on")
	}
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	oldProg := d.objs.SyngateXdp
	oldInfo, err := oldProg.Info()
	if err != nil {
		t.Fatal(err)
	}
	oldID, _ := oldInfo.ID()

	if err := d.SetFilters(Filters{DropBadFlags: true, DropSYNPayload: true}); err != nil {
		t.Fatal(err)
	}
	if got := d.Filters(); !got.DropBadFlags || !got.DropSYNPayload {
		t.Errorf("Filters() = %+v", got)
	}
	info, err := d.links[ifindex(t, "sgtest0")].link.Info()
	if err != nil {
		t.Fatal(err)
	}
	newInfo, err := d.objs.SyngateXdp.Info()
	if err != nil {
		t.Fatal(err)
	}
	newID, _ := newInfo.ID()
	if info.Program != newID || newID == oldID {
		t.Fatalf("link runs program %d; old %d, new %d", info.Program, oldID, newID)
	}
	tcInfo, err := d.tc[ifindex(t, "sgtest1")].link.Info()
	if err != nil {
		t.Fatal(err)
	}
	if newTC := progID(t, d.objs.SyngateTc); tcInfo.Program != newTC || newTC == oldTC {
		t.Fatalf("TC link runs program %d; old %d, new %d", tcInfo.Program, oldTC, newTC)
	}
	if r := mustRun(t, d, badFlags); r.verdict != VerdictDropBadFlags {
		t.Errorf("SYN+FIN after the reload: verdict %v, want %v", r.verdict, VerdictDropBadFlags)
	}
	if r := mustRun(t, d, synData); r.verdict != VerdictDropSynPayload {
		t.Errorf("SYN with data after the reload: verdict %v, want %v", r.verdict, VerdictDropSynPayload)
	}
	// The maps are the old ones: the service and its socket still answer,
	// and the counters carried on.
	if r := mustRun(t, d, frame(t, pkt{src: client4, dst: svc4, flags: "S"})); r.verdict != VerdictXSKSyn {
		t.Errorf("SYN to the service after the reload: verdict %v, want %v", r.verdict, VerdictXSKSyn)
	}
	after, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after[VerdictXSKSyn].Packets <= before[VerdictXSKSyn].Packets || after[VerdictDropBadFlags].Packets == 0 {
		t.Errorf("counters did not carry on: before %v, after %v", before[VerdictXSKSyn], after[VerdictXSKSyn])
	}
	// An invalid filter changes nothing.
	if err := d.SetFilters(Filters{SYNRateLimit: RateLimit{PerSecond: 1, Prefix4: 40}}); err == nil {
		t.Fatal("a /40 IPv4 prefix accepted")
	}
	if got := d.Filters(); !got.DropBadFlags || got.SYNRateLimit.PerSecond != 0 {
		t.Errorf("a refused SetFilters changed the filters: %+v", got)
	}
	if r := mustRun(t, d, badFlags); r.verdict != VerdictDropBadFlags {
		t.Errorf("after a refused SetFilters: verdict %v", r.verdict)
	}
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}
