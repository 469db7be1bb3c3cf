package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The C structs and their Go mirrors, pinned: a change on either side must
// be deliberate (and, for pinned maps, is a restart-compatibility break).
func TestLayouts(t *testing.T) {
	for _, tc := range []struct {
		v    any
		size int
	}{
		{syngateSvcKey{}, 20},
		{syngateSvcVal{}, 16},
		{syngateCookieState{}, 88},
		{syngateLocalKey{}, 20},
		{syngateFlowKey{}, 40},
		{syngateFlowVal{}, 128},
		{syngateRlKey{}, 20},
		{syngateRlVal{}, 16},
		{syngateCounter{}, 16},
		{syngateConfig{}, 40},
	} {
		if got := binary.Size(tc.v); got != tc.size {
			t.Errorf("%T is %d bytes, want %d", tc.v, got, tc.size)
		}
	}
	spec, err := loadSyngate()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkLayouts(spec); err != nil {
		t.Fatal(err)
	}
	spec.Maps[syngateMapFlows].ValueSize++
	if err := checkLayouts(spec); err == nil {
		t.Fatal("checkLayouts accepted a value size mismatch")
	}
	if got := spec.Maps[syngateMapCounters].MaxEntries; got != NumVerdicts {
		t.Fatalf("counters map has %d entries, Go has %d verdicts", got, NumVerdicts)
	}
}

// The Go verdicts mirror enum reason value for value.
func TestVerdictMirror(t *testing.T) {
	c := map[Verdict]syngateReason{
		VerdictPassNotIP: syngateReasonR_PASS_NOT_IP, VerdictPassNotTCP: syngateReasonR_PASS_NOT_TCP,
		VerdictPassNotService: syngateReasonR_PASS_NOT_SERVICE, VerdictPassMalformedEth: syngateReasonR_PASS_MALFORMED_ETH,
		VerdictPassMalformedIP: syngateReasonR_PASS_MALFORMED_IP, VerdictPassMalformedTCP: syngateReasonR_PASS_MALFORMED_TCP,
		VerdictPassIPv6ExtLimit: syngateReasonR_PASS_IPV6EXT_LIMIT, VerdictPassFragment: syngateReasonR_PASS_FRAGMENT,
		VerdictXSKSyn: syngateReasonR_XSK_SYN, VerdictXSKHandshake: syngateReasonR_XSK_HANDSHAKE,
		VerdictXSKBackend: syngateReasonR_XSK_BACKEND, VerdictFastTX: syngateReasonR_FAST_TX,
		VerdictFastRedirect: syngateReasonR_FAST_REDIRECT, VerdictDropNoSocket: syngateReasonR_DROP_NO_SOCKET,
		VerdictDropRstFinUnknown: syngateReasonR_DROP_RST_FIN_UNKNOWN, VerdictDropBadFlags: syngateReasonR_DROP_BAD_FLAGS,
		VerdictDropSynPayload: syngateReasonR_DROP_SYN_PAYLOAD, VerdictDropSynRateLimit: syngateReasonR_DROP_SYN_RATELIMIT,
		VerdictDropFragment: syngateReasonR_DROP_FRAGMENT, VerdictDropTCPTruncated: syngateReasonR_DROP_TCP_TRUNCATED,
		VerdictDropTCPDoffShort: syngateReasonR_DROP_TCP_DOFF_SHORT, VerdictDropTCPDoffLong: syngateReasonR_DROP_TCP_DOFF_LONG,
		VerdictDropTCPOptions: syngateReasonR_DROP_TCP_OPTIONS, VerdictDropFastNoRoute: syngateReasonR_DROP_FAST_NO_ROUTE,
		VerdictDropFastNoNeigh: syngateReasonR_DROP_FAST_NO_NEIGH, VerdictDropFastNoPort: syngateReasonR_DROP_FAST_NO_PORT,
		VerdictTXSynAckCookie: syngateReasonR_TX_SYNACK_COOKIE,
		VerdictICMPTX:         syngateReasonR_ICMP_TX, VerdictICMPRedirect: syngateReasonR_ICMP_REDIRECT,
		VerdictPassICMPNoFlow: syngateReasonR_PASS_ICMP_NO_FLOW, VerdictDropICMPRateLimit: syngateReasonR_DROP_ICMP_RATELIMIT,
		VerdictDropICMPNoNeigh: syngateReasonR_DROP_ICMP_NO_NEIGH, VerdictDropICMPNoPort: syngateReasonR_DROP_ICMP_NO_PORT,
		VerdictDropRstOutOfWindow: syngateReasonR_DROP_RST_OUT_OF_WINDOW, VerdictXSKRstInWindow: syngateReasonR_XSK_RST_IN_WINDOW,
		VerdictFastTXOutOfWindow: syngateReasonR_FAST_TX_OUT_OF_WINDOW, VerdictFastRedirectOutOfWindow: syngateReasonR_FAST_REDIRECT_OUT_OF_WINDOW,
		VerdictXSKSynInFlow: syngateReasonR_XSK_SYN_IN_FLOW,
		VerdictPassTCFlow:   syngateReasonR_PASS_TC_FLOW, VerdictTCRedirect: syngateReasonR_TC_REDIRECT,
		VerdictTCRedirectNeigh: syngateReasonR_TC_REDIRECT_NEIGH, VerdictDropTCCsum: syngateReasonR_DROP_TC_CSUM, VerdictPassTCOutOfWindow: syngateReasonR_PASS_TC_OUT_OF_WINDOW,
		VerdictDropRstClosed: syngateReasonR_DROP_RST_CLOSED,
	}
	if len(c) != NumVerdicts || syngateReasonR_MAX != NumVerdicts {
		t.Fatalf("%d verdicts mapped, Go has %d, C has %d", len(c), NumVerdicts, syngateReasonR_MAX)
	}
	names := map[string]bool{}
	for v, r := range c {
		if uint32(v) != uint32(r) {
			t.Errorf("%v is %d in Go, %d in C", v, v, r)
		}
		name := v.String()
		if names[name] || name == "unknown" || strings.ToLower(name) != name || strings.ContainsAny(name, " -.") {
			t.Errorf("verdict %d has a bad or duplicate label %q", v, name)
		}
		names[name] = true
		want := map[string]Action{"pass": ActionPass, "drop": ActionDrop, "xsk": ActionRedirect, "fast": v.Action(), "tx": ActionTX}[strings.Split(name, "_")[0]]
		if v.Action() != want || v.Action() == ActionAborted {
			t.Errorf("%v: action %v, want %v", v, v.Action(), want)
		}
	}
	if VerdictFastTX.Action() != ActionTX || VerdictFastRedirect.Action() != ActionRedirect || VerdictTXSynAckCookie.Action() != ActionTX {
		t.Error("fast-path actions wrong")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{LocalPorts: PortRange{2, 1}}, false},
		{Config{MaxFlows: -1}, false},
		{Config{SYNRateLimit: RateLimit{PerSecond: 2e9}}, false},
		{Config{SYNRateLimit: RateLimit{PerSecond: 1, Burst: 2e9}}, false},
		{Config{SYNRateLimit: RateLimit{PerSecond: 1, Burst: 1, Prefix4: 33, Prefix6: 64}}, false},
		{Config{SYNRateLimit: RateLimit{PerSecond: 1, Prefix4: 24, Prefix6: 64}}, false}, // no burst: no default here
		{Config{SYNRateLimit: RateLimit{PerSecond: 1, Burst: 1, Prefix4: 24, Prefix6: 129}}, false},
		{Config{SYNRateLimit: RateLimit{PerSecond: 1e9, Burst: 1e9, Prefix4: 32, Prefix6: 128}}, true},
	} {
		_, err := tc.cfg.bpfConfig()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: error %v, want ok=%v", tc.cfg, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v does not wrap ErrInvalid", tc.cfg, err)
		}
	}
	bc, err := Config{SYNRateLimit: RateLimit{PerSecond: 100, Burst: 50, Prefix4: 24, Prefix6: 64}, DropBadFlags: true}.bpfConfig()
	if err != nil {
		t.Fatal(err)
	}
	if bc.RlFillNs != 5e8 || bc.RlPrefix4 != 24 || bc.RlPrefix6 != 64 || bc.Flags != cfgDropBadFlags|cfgSYNRateLimit {
		t.Errorf("config %+v", bc)
	}
	if bc.LocalPortMin <= bc.LocalPortMax {
		t.Errorf("empty local port range maps to %d-%d, which matches ports", bc.LocalPortMin, bc.LocalPortMax)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"auto": ModeAuto, "": ModeAuto, "native": ModeNative, "DRV": ModeNative, "generic": ModeGeneric, "skb": ModeGeneric} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v", in, got, err)
		}
		if got, _ := ParseMode(want.String()); got != want {
			t.Errorf("%v does not round-trip", want)
		}
	}
	if _, err := ParseMode("fast"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseMode(fast): %v", err)
	}
}

func TestCapabilities(t *testing.T) {
	eff, err := parseCapEff("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n")
	if err != nil || eff != 0x1ffffffffff {
		t.Fatalf("parseCapEff: %x, %v", eff, err)
	}
	if _, err := parseCapEff("Name: x\n"); err == nil {
		t.Fatal("parseCapEff without CapEff succeeded")
	}
	if m := missingCapabilities(1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_PERFMON); len(m) != 1 || m[0] != "CAP_BPF" {
		t.Errorf("missing with only NET_ADMIN: %v", m)
	}
	if m := missingCapabilities(0); len(m) != len(RequiredCapabilities) {
		t.Errorf("missing with none: %v", m)
	}
	if !strings.Contains(ErrPermission.Error(), "CAP_BPF+CAP_NET_ADMIN") {
		t.Errorf("ErrPermission does not name the capabilities: %v", ErrPermission)
	}
	err = CheckCapabilities()
	if os.Geteuid() == 0 && err != nil {
		t.Errorf("root: %v", err)
	}
	if err != nil && !errors.Is(err, ErrPermission) {
		t.Errorf("CheckCapabilities: %v does not wrap ErrPermission", err)
	}
}

func TestClassifyVerifierError(t *testing.T) {
	var log []string
	for i := range 30 {
		log = append(log, fmt.Sprintf("line %d", i))
	}
	err := classify(fmt.Errorf("load: %w", &ebpf.VerifierError{Cause: unix.EACCES, Log: log}))
	if !errors.Is(err, ErrVerifier) {
		t.Fatalf("%v does not wrap ErrVerifier", err)
	}
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		t.Fatal("the verifier error is lost")
	}
	if msg := err.Error(); !strings.Contains(msg, "line 29") || !strings.Contains(msg, "line 10") || strings.Contains(msg, "line 9\n") {
		t.Errorf("message does not carry the last %d log lines: %q", verifierTail, msg)
	}
	if err := classify(fmt.Errorf("x: %w", unix.EPERM)); !errors.Is(err, ErrPermission) {
		t.Errorf("EPERM: %v", err)
	}
	if err := classify(fmt.Errorf("x: %w", ebpf.ErrNotSupported)); !errors.Is(err, ErrNotSupported) || !errors.Is(err, ebpf.ErrNotSupported) {
		t.Errorf("not supported: %v", err)
	}
}

func TestAttach(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	addVeth(t, 0)
	d := testDataplane(t, Config{})
	xdpOn := func(name string) string { return xdpMode(t, name) }
	if err := d.Attach("nosuch0", ModeAuto); !errors.Is(err, ErrUnknownInterface) {
		t.Fatalf("unknown interface: %v", err)
	}
	if err := d.Attach("sgtest0", ModeNative); err != nil {
		t.Fatal(err)
	}
	if err := d.Attach("sgtest0", ModeGeneric); !errors.Is(err, ErrAlreadyAttached) {
		t.Fatalf("second attach: %v", err)
	}
	if err := d.Attach("sgtest1", ModeGeneric); err != nil {
		t.Fatal(err)
	}
	if got := d.Attached(); len(got) != 2 || got["sgtest0"] != ModeNative || got["sgtest1"] != ModeGeneric {
		t.Fatalf("attached: %v", got)
	}
	if a, b := xdpOn("sgtest0"), xdpOn("sgtest1"); a != "native" || b != "generic" {
		t.Fatalf("kernel shows sgtest0 %q, sgtest1 %q", a, b)
	}
	idx := ifindex(t, "sgtest0")
	var v uint32
	if err := d.objs.TxPorts.Lookup(uint32(idx), &v); err != nil {
		t.Fatalf("sgtest0 not in the redirect map: %v", err)
	}
	if err := d.Detach("sgtest0"); err != nil {
		t.Fatal(err)
	}
	if err := d.Detach("sgtest0"); !errors.Is(err, ErrNotAttached) {
		t.Fatalf("second detach: %v", err)
	}
	if xdpOn("sgtest0") != "" {
		t.Fatal("sgtest0 still has XDP after Detach")
	}
	if err := d.objs.TxPorts.Lookup(uint32(idx), &v); err == nil {
		t.Fatal("sgtest0 still in the redirect map")
	}
	if err := d.Attach("sgtest0", ModeAuto); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if a, b := xdpOn("sgtest0"), xdpOn("sgtest1"); a != "" || b != "" {
		t.Fatalf("after Close: sgtest0 %q, sgtest1 %q", a, b)
	}
}

func TestPinnedRestart(t *testing.T) {
	requireRoot(t)
	// A private bpffs instance on a temporary directory, unmounted at the end.
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Skipf("skipping: mount bpffs on %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})

	// The pin directory itself is created when its parent is a bpffs, as
	// /sys/fs/bpf/syngate is on a fresh machine; elsewhere it is an error.
	dir := mnt + "/syngate"
	if _, err := Load(Config{PinPath: t.TempDir()}); !errors.Is(err, ErrPinPath) {
		t.Fatalf("pin path on tmpfs: %v", err)
	}
	if _, err := Load(Config{PinPath: t.TempDir() + "/missing"}); !errors.Is(err, ErrPinPath) {
		t.Fatalf("missing pin path on tmpfs: %v", err)
	}

	cfg := Config{PinPath: dir, LocalPorts: localPorts}
	d1, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	key := flow.Key{Src: client4, Dst: svc4}
	nat := flow.NAT{Src: netip.AddrPortFrom(local4, 40000), Dst: back4, SeqDelta: 42}
	if err := errors.Join(d1.SetService(spec.Entry{Listen: svc4, ID: 7}), d1.AddLocal(local4), d1.InstallFlow(key, nat)); err != nil {
		t.Fatal(err)
	}
	mustRun(t, d1, frame(t, pkt{src: client4, dst: other4, flags: "S"}))
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}

	// A new process: same pins, state still there.
	d2, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	svcs, err := d2.Services()
	if err != nil || len(svcs) != 1 || svcs[0] != (spec.Entry{Listen: svc4, ID: 7}) {
		t.Fatalf("services after restart: %v, %v", svcs, err)
	}
	if st, err := d2.LookupFlow(key); err != nil || st.NAT != nat {
		t.Fatalf("flow after restart: %+v, %v", st, err)
	}
	c, err := d2.Counters()
	if err != nil || c[VerdictPassNotService].Packets != 1 {
		t.Fatalf("counters after restart: %v, %v", c[VerdictPassNotService], err)
	}
	if r := mustRun(t, d2, frame(t, pkt{src: back4, dst: netip.AddrPortFrom(local4, 40000), flags: "SA"})); r.verdict != VerdictDropNoSocket {
		t.Fatalf("local after restart: verdict %v", r.verdict)
	}

	// A second instance fails before touching anything.
	if _, err := Load(cfg); !errors.Is(err, ErrLocked) {
		t.Fatalf("second instance: %v", err)
	}
	if err := d2.Close(); err != nil {
		t.Fatal(err)
	}

	// Counters of a version with fewer verdicts are migrated by index, not
	// refused: every verdict added would otherwise stop an upgrade.
	if err := os.Remove(dir + "/counters"); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16, MaxEntries: NumVerdicts - 6})
	if err != nil {
		t.Fatal(err)
	}
	perCPU := make([]syngateCounter, ebpf.MustPossibleCPU())
	perCPU[0].Packets = 5
	if err := old.Put(uint32(VerdictPassNotService), perCPU); err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(dir + "/counters"); err != nil {
		t.Fatal(err)
	}
	old.Close()
	d2, err = Load(cfg)
	if err != nil {
		t.Fatalf("load over older pinned counters: %v", err)
	}
	if c, err := d2.Counters(); err != nil || c[VerdictPassNotService].Packets != 5 {
		t.Fatalf("counters after migrating older ones: %v, %v", c[VerdictPassNotService], err)
	}
	if st, err := d2.LookupFlow(key); err != nil || st.NAT != nat {
		t.Fatalf("flow after migrating the counters: %+v, %v", st, err)
	}
	if err := d2.Close(); err != nil {
		t.Fatal(err)
	}

	// Another flow table size is migrated, entries and all.
	d3, err := Load(Config{PinPath: dir, LocalPorts: localPorts, MaxFlows: 1024})
	if err != nil {
		t.Fatalf("flow table resized: %v", err)
	}
	if st, err := d3.LookupFlow(key); err != nil || st.NAT != nat {
		t.Fatalf("flow after resize: %+v, %v", st, err)
	}
	if n := d3.objs.Flows.MaxEntries(); n != 1024 {
		t.Fatalf("flow table has %d entries after resize, want 1024", n)
	}
	// The running program records a FIN in the old table after the copy;
	// the merge after the link update carries it over.
	fk, err := flowKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var ov syngateFlowVal
	if err := d3.oldFlows.Lookup(&fk, &ov); err != nil {
		t.Fatalf("old flow table: %v", err)
	}
	ov.Flags |= flowFIN
	ov.LastSeenNs = 12345
	if err := d3.oldFlows.Put(&fk, &ov); err != nil {
		t.Fatal(err)
	}
	if n, err := d3.MergeMigratedFlows(); err != nil || n != 1 {
		t.Fatalf("merge: %d, %v", n, err)
	}
	if st, err := d3.LookupFlow(key); err != nil || !st.FIN || st.LastSeen != 12345 {
		t.Fatalf("flow after merge: %+v, %v", st, err)
	}
	if c, err := d3.Counters(); err != nil || c[VerdictPassNotService].Packets != 5 {
		t.Fatalf("counters after resize: %v, %v", c[VerdictPassNotService], err)
	}
	// A layout generation this version does not know is refused, naming
	// the command that resets it.
	if err := d3.meta.Put(newMetaKey("gen/"+syngateMapFlows), uint64(99)); err != nil {
		t.Fatal(err)
	}
	if err := d3.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Load(cfg)
	if !errors.Is(err, ErrPinnedIncompatible) || !strings.Contains(err.Error(), "syngate reset") {
		t.Fatalf("unknown layout generation: %v", err)
	}

	if err := Reset(dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin directory left after Reset: %v", err)
	}
}

// TestPinnedTakeOver: the program stays attached after Close through its
// pinned link, the next Load replaces it through that link, and Unpin
// detaches.
func TestPinnedTakeOver(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Skipf("skipping: mount bpffs on %s: %v", mnt, err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	cfg := Config{PinPath: mnt + "/syngate", LocalPorts: localPorts}
	attachedProg := func() ebpf.ProgramID {
		t.Helper()
		l, err := link.LoadPinnedLink(cfg.PinPath+"/link_lo", nil)
		if err != nil {
			t.Fatalf("pinned link: %v", err)
		}
		defer l.Close()
		info, err := l.Info()
		if err != nil || info.XDP() == nil || info.XDP().Ifindex != loIfindex {
			t.Fatalf("pinned link info %+v, %v", info, err)
		}
		return info.Program
	}

	d1, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.Attach("lo", ModeGeneric); err != nil {
		t.Fatal(err)
	}
	if d1.TookOver("lo") {
		t.Fatal("first attach reported a take-over")
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	first := attachedProg() // still attached with no process holding it

	d2, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.Attach("lo", ModeAuto); err != nil {
		t.Fatal(err)
	}
	if !d2.TookOver("lo") || d2.Attached()["lo"] != ModeGeneric {
		t.Fatalf("second attach: took over %v, modes %v", d2.TookOver("lo"), d2.Attached())
	}
	info, err := d2.objs.SyngateXdp.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	if second := attachedProg(); second == first || second != id {
		t.Fatalf("link runs program %d, first was %d, the new one is %d", second, first, id)
	}
	if ifs, err := d2.PinnedInterfaces(); err != nil || len(ifs) != 1 || ifs[0] != "lo" {
		t.Fatalf("pinned interfaces %v, %v", ifs, err)
	}
	if err := d2.Unpin(); err != nil {
		t.Fatal(err)
	}
	if err := d2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.PinPath + "/link_lo"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("link pin left after Unpin: %v", err)
	}
}
