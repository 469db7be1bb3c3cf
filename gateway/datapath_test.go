package gateway

import (
	"testing"

	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/lab"
)

// TestChooseDatapath reads real drivers in a lab namespace: auto is tc on a
// veth, xdp on the loopback (no ethtool driver info), and a configured
// datapath wins.
func TestChooseDatapath(t *testing.T) {
	lab.RequireRoot(t)
	a, err := lab.NewNS(t, "sg-dp-a-")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.NewNS(t, "sg-dp-b-")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Veth(a, "v0", b, "v1"); err != nil {
		t.Fatal(err)
	}
	err = a.Run(func() error {
		for _, tc := range []struct {
			in   config.Interface
			want bpf.Datapath
		}{
			{config.Interface{Name: "v0", Datapath: config.DatapathAuto}, bpf.DatapathTC},
			{config.Interface{Name: "v0", Datapath: config.DatapathXDP}, bpf.DatapathXDP},
			{config.Interface{Name: "lo", Datapath: config.DatapathAuto}, bpf.DatapathXDP},
			{config.Interface{Name: "lo", Datapath: config.DatapathTC}, bpf.DatapathTC},
			{config.Interface{Name: "nosuch0", Datapath: config.DatapathAuto}, bpf.DatapathXDP},
		} {
			got, why := chooseDatapath(tc.in)
			t.Logf("%s %s: %v (%s)", tc.in.Name, tc.in.Datapath, got, why)
			if got != tc.want {
				t.Errorf("%s %s: %v (%s), want %v", tc.in.Name, tc.in.Datapath, got, why, tc.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
