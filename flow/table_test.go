package flow

import (
	"net/netip"
	"testing"
)

func TestFINAcked(t *testing.T) {
	for _, tt := range []struct {
		name   string
		fin    bool
		finEnd uint32
		ackMax uint32
		want   bool
	}{
		{"no FIN", false, 100, 200, false},
		{"FIN not acked yet", true, 100, 99, false},
		{"FIN acked exactly", true, 100, 100, true},
		{"FIN acked and more", true, 100, 5000, true},
		{"across the wrap, acked", true, 0xffff_fff0, 0x10, true},
		{"across the wrap, not acked", true, 0x10, 0xffff_fff0, false},
	} {
		s := State{FIN: tt.fin, FinEnd: tt.finEnd}
		rev := State{Track: Track{AckMax: tt.ackMax}}
		if got := s.FINAcked(rev); got != tt.want {
			t.Errorf("%s: FINAcked = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestClientKey(t *testing.T) {
	tu := Tuple{Client: netip.MustParseAddrPort("[2001:db8::1]:40000"), Service: netip.MustParseAddrPort("[2001:db8::80]:443")}
	k := ClientKey(tu)
	if k.Src != tu.Client || k.Dst != tu.Service {
		t.Fatalf("ClientKey(%v) = %+v", tu, k)
	}
	if got, want := k.String(), "[2001:db8::1]:40000 -> [2001:db8::80]:443"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}
