package gateway

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Each receive queue gets one AF_XDP socket and one engine receive loop
// (a shard: its own worker, buffers and random source), locked to an OS
// thread pinned to the CPU that serves the queue's interrupts. The NIC's
// RSS hashes a connection's 4-tuple to one queue, so every packet of a
// handshake reaches the same shard, on the CPU whose cache already holds
// the frame. The shards share no lock of their own; the engine's tables
// (half-open queue, connections) are sharded by tuple hash, so two shards
// meet on a lock only when their tuples hash alike (see README, "All
// cores of one machine").

// queueCPU picks the CPU for receive queue q of ifname: configured[q mod
// len] when the config names CPUs, else the first CPU of the queue's IRQ
// affinity, else the allowed CPUs in turn by queue index (veth and other
// virtual devices have no IRQ per queue). how says which rule chose it.
func queueCPU(ifname string, q int, configured, allowed []int, interrupts string, affinity func(irq int) (string, error)) (cpu int, how string) {
	if len(configured) > 0 {
		return configured[q%len(configured)], "config"
	}
	if irq, ok := queueIRQ(interrupts, ifname, q); ok {
		if list, err := affinity(irq); err == nil {
			if cpus := parseCPUList(list); len(cpus) > 0 {
				return cpus[0], fmt.Sprintf("irq %d", irq)
			}
		}
	}
	if len(allowed) == 0 {
		return -1, "none"
	}
	return allowed[q%len(allowed)], "queue index"
}

// queueIRQ finds the IRQ of queue q of ifname in /proc/interrupts text,
// by the names drivers give their queue vectors: "eth0-TxRx-3",
// "eth0-rx-3" (Intel and most others; drivers that name vectors otherwise,
// such as mlx5 or virtio, fall back to the queue index or the config).
func queueIRQ(interrupts, ifname string, q int) (int, bool) {
	suffix := "-" + strconv.Itoa(q)
	for _, line := range strings.Split(interrupts, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := f[len(f)-1]
		if !strings.HasPrefix(name, ifname+"-") || !strings.HasSuffix(name, suffix) {
			continue
		}
		mid := strings.TrimSuffix(strings.TrimPrefix(name, ifname+"-"), suffix)
		if !strings.EqualFold(mid, "TxRx") && !strings.EqualFold(mid, "rx") {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSuffix(f[0], ":")); err == nil {
			return n, true
		}
	}
	return 0, false
}

// parseCPUList reads a kernel CPU list such as "0-3,8".
func parseCPUList(s string) []int {
	var out []int
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		lo, hi, found := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if found {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out
}

// irqAffinity reads /proc/irq/N/smp_affinity_list.
func irqAffinity(irq int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/irq/%d/smp_affinity_list", irq))
	return string(b), err
}

// allowedCPUs are the CPUs this process may run on.
func allowedCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var out []int
	for c := 0; c < 1024 && len(out) < set.Count(); c++ {
		if set.IsSet(c) {
			out = append(out, c)
		}
	}
	return out
}

// pinThread locks the calling goroutine to its OS thread and that thread
// to cpu. The thread is not unlocked: it exits with the goroutine.
func pinThread(cpu int) error {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin receive loop to cpu %d: %w", cpu, err)
	}
	return nil
}
