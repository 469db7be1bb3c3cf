package gateway

import (
	"errors"
	"reflect"
	"testing"
)

const interrupts = `            CPU0       CPU1       CPU2       CPU3
  24:          0          0          0          0   PCI-MSI 1048576-edge      eth0
  25:     123456          0          0          0   PCI-MSI 1048577-edge      eth0-TxRx-0
  26:          0     654321          0          0   PCI-MSI 1048578-edge      eth0-TxRx-1
  27:          0          0          1          0   PCI-MSI 1048579-edge      eth1-rx-1
  28:          0          0          1          0   PCI-MSI 1048579-edge      eth0-TxRx-11
`

func TestQueueCPU(t *testing.T) {
	aff := map[int]string{25: "2\n", 26: "1-3\n", 27: "3"}
	affinity := func(irq int) (string, error) {
		if s, ok := aff[irq]; ok {
			return s, nil
		}
		return "", errors.New("no such irq")
	}
	allowed := []int{0, 1}
	for _, tc := range []struct {
		ifname     string
		q          int
		configured []int
		cpu        int
		how        string
	}{
		{"eth0", 0, nil, 2, "irq 25"},
		{"eth0", 1, nil, 1, "irq 26"},
		{"eth1", 1, nil, 3, "irq 27"},
		{"eth0", 11, nil, 1, "queue index"}, // IRQ 28 has no affinity file here
		{"veth0", 3, nil, 1, "queue index"},
		{"eth0", 1, []int{5, 6, 7}, 6, "config"},
		{"veth0", 4, []int{5, 6, 7}, 6, "config"},
	} {
		cpu, how := queueCPU(tc.ifname, tc.q, tc.configured, allowed, interrupts, affinity)
		if cpu != tc.cpu || how != tc.how {
			t.Errorf("%s queue %d (cpus %v): cpu %d by %s, want %d by %s", tc.ifname, tc.q, tc.configured, cpu, how, tc.cpu, tc.how)
		}
	}
	if got := parseCPUList("0-2,5,7-8\n"); !reflect.DeepEqual(got, []int{0, 1, 2, 5, 7, 8}) {
		t.Errorf("parseCPUList = %v", got)
	}
}
