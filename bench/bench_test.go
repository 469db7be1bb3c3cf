package main

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// frame builds an Ethernet/IPv4/TCP header (no payload) with the given TCP
// flags; checksums are left zero, the programs do not look at them.
func frame(flags byte) []byte {
	return frameAddrs(flags, [4]byte{203, 0, 113, 1}, [4]byte{198, 18, 0, 1})
}

// frameAddrs is frame with the given IPv4 source and destination.
func frameAddrs(flags byte, src, dst [4]byte) []byte {
	f := make([]byte, 14+20+20)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 1})  // dst
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 2}) // src
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = 6
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], 80)
	binary.BigEndian.PutUint16(tcp[2:], 40000)
	tcp[12] = 5 << 4
	tcp[13] = flags
	return f
}

func TestCounterPrograms(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading XDP programs needs root")
	}
	const syn, ack, rst = 0x02, 0x10, 0x04
	for _, tc := range []struct {
		name        string
		kind        progKind
		in          []byte
		verdict     uint32
		synacks     uint64
		wantOutFlag byte
		swapped     bool
	}{
		{"pass counts SYN-ACK", progCountPass, frameAddrs(syn|ack, [4]byte{203, 0, 113, 1}, [4]byte{192, 0, 2, 2}), xdpPass, 1, syn | ack, false},
		{"pass counts and drops a SYN-ACK to a spoofed source", progCountPass, frame(syn | ack), xdpDrop, 1, syn | ack, false},
		{"pass counts and drops one to the /15's upper half", progCountPass, frameAddrs(syn|ack, [4]byte{203, 0, 113, 1}, [4]byte{198, 19, 7, 1}), xdpDrop, 1, syn | ack, false},
		{"pass counts and drops a bounce from a spoofed source", progCountPass, frameAddrs(syn|ack, [4]byte{198, 18, 3, 4}, [4]byte{203, 0, 113, 1}), xdpDrop, 1, syn | ack, false},
		{"pass passes 198.20/16 (outside the range)", progCountPass, frameAddrs(syn|ack, [4]byte{203, 0, 113, 1}, [4]byte{198, 20, 0, 1}), xdpPass, 1, syn | ack, false},
		{"pass ignores SYN", progCountPass, frame(syn), xdpPass, 0, syn, false},
		{"pass ignores RST-ACK", progCountPass, frame(rst | ack), xdpPass, 0, rst | ack, false},
		{"pass ignores a short frame", progCountPass, frame(syn | ack)[:40], xdpPass, 0, 0, false},
		{"drop drops everything", progDrop, frame(syn), xdpDrop, 0, syn, false},
		{"bounce turns SYN into SYN-ACK", progBounce, frame(syn), xdpTX, 1, syn | ack, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newCounterProg(tc.kind)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			out := make([]byte, len(tc.in))
			ret, err := p.prog.Run(&ebpf.RunOptions{Data: tc.in, DataOut: out})
			if err != nil {
				t.Fatal(err)
			}
			if ret != tc.verdict {
				t.Errorf("verdict %d, want %d", ret, tc.verdict)
			}
			frames, synacks, err := p.read()
			if err != nil {
				t.Fatal(err)
			}
			if frames != 1 || synacks != tc.synacks {
				t.Errorf("counted %d frames, %d SYN-ACKs; want 1, %d", frames, synacks, tc.synacks)
			}
			if len(out) >= 48 && tc.wantOutFlag != 0 && out[47] != tc.wantOutFlag {
				t.Errorf("TCP flags out %#x, want %#x", out[47], tc.wantOutFlag)
			}
			if got := bytes.Equal(out[0:6], tc.in[6:12]) && bytes.Equal(out[6:12], tc.in[0:6]); got != tc.swapped {
				t.Errorf("MACs swapped = %v, want %v", got, tc.swapped)
			}
		})
	}
}

func TestProcReaders(t *testing.T) {
	c0, err := readCPUTimes()
	if err != nil {
		t.Fatal(err)
	}
	// Burn a little CPU so both readers must move forward.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0.0; time.Now().Before(deadline); x += math.Sqrt(x + 1) {
	}
	c1, err := readCPUTimes()
	if err != nil {
		t.Fatal(err)
	}
	if d := c1.sub(c0); d.busy < 0 || d.busy < d.softirq {
		t.Errorf("cpu delta %+v: busy must be >= 0 and include softirq", d)
	}
	cpu, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if cpu <= 0 {
		t.Errorf("own CPU time %v after a busy loop", cpu)
	}
	rss, peak, err := procMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss == 0 || peak < rss {
		t.Errorf("rss %d, peak %d: want 0 < rss <= peak", rss, peak)
	}
	if _, err := procCPU(-1); err == nil {
		t.Error("procCPU of a missing pid: no error")
	}
}

func TestNiceCeil(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{0, 1}, {1, 1}, {1.2, 2}, {3, 4}, {4.5, 5}, {7, 10}, {636e3, 1e6}, {420e3, 5e5}, {1.31e6, 2e6},
	} {
		if got := niceCeil(tc.in); got != tc.want {
			t.Errorf("niceCeil(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func sampleResults() *Results {
	return &Results{
		Date:     "2026-11-25T00:00:00Z",
		Syngate:  "abc",
		Machine:  Machine{CPU: "Test <CPU> & co", Cores: 2, Kernel: "6.0"},
		Ceilings: Ceilings{FloodMaxPPS: 1e6, XDPTXSynAckPPS: 8e5, XDPTXCPUPerMSYN: 1.5},
		Defenses: []DefenseResult{
			{Key: "syngate", Name: "syngate", BulkMBps: 500, MaxConnsPerSec: 2000, PeakRSSBytes: 40 << 20, RSSBytes: 30 << 20,
				Steps: []Step{{Fraction: 0, SuccessRate: 1}, {Fraction: 1, FloodPPS: 6e5, FloodSent: 6e6, SuccessRate: 0.9, SynAcksPerSec: 2e5, CPUPerMSYN: 3}}},
			{Key: "synproxy", Name: "nftables synproxy", MaxConnsPerSec: 1000,
				Steps: []Step{{Fraction: 0, SuccessRate: 1}, {Fraction: 1, FloodPPS: 3e5, FloodSent: 3e6, SuccessRate: 1, SynAcksPerSec: 4e5}}},
			{Key: "none", Name: "no defense", BulkMBps: 600, Error: "setup: boom\nmore"},
		},
	}
}

func TestRatios(t *testing.T) {
	res := sampleResults()
	got := map[string]float64{}
	for _, r := range ratios(res) {
		got[r.Name] = r.Value
	}
	want := map[string]float64{
		"syngate / nftables synproxy, peak SYN-ACKs/s":    0.5,
		"syngate / kernel SYN cookies, peak SYN-ACKs/s":   0, // no kernel row
		"syngate peak SYN-ACKs/s / XDP_TX ceiling":        0.25,
		"syngate / no defense, bulk throughput":           0, // "none" failed without steps
		"syngate / nftables synproxy, new connections/s":  2,
		"syngate CPU per flood SYN / XDP_TX ceiling's":    2,
		"syngate / kernel SYN cookies, new connections/s": 0, // no kernel row
	}
	if _, ok := got["syngate connect p50 added, no flood"]; ok {
		t.Error("the added latency needs a kernel row")
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || math.Abs(g-v) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

func TestOutputs(t *testing.T) {
	res := sampleResults()
	res.Ratios = ratios(res)
	// The SVG must be well-formed XML with the machine's name escaped.
	svg := successSVG(res)
	d := xml.NewDecoder(bytes.NewReader(svg))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("svg is not well-formed: %v\n%s", err, svg)
		}
	}
	if n := bytes.Count(svg, []byte("<polyline")); n != 2 {
		t.Errorf("%d polylines, want one per defense with steps (2)", n)
	}
	var md, txt bytes.Buffer
	writeMarkdown(&md, res)
	printTable(&txt, res)
	for _, out := range []string{md.String(), txt.String()} {
		for _, want := range []string{"syngate", "nftables synproxy", "90.0%", "error: setup: boom", "0.50x", "2.00x", "30/40"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	}
	if !strings.Contains(md.String(), "| --- |") || !strings.Contains(md.String(), "2026-11-25") {
		t.Errorf("markdown lacks a table or the date:\n%s", md.String())
	}
}
