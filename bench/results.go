package main

// Results is everything one run measured; it is written as
// bench/results/latest.json and rendered into the table, the markdown file
// and the plot.
type Results struct {
	Date  string `json:"date"`
	Quick bool   `json:"quick"`
	// Syngate is the commit the syngate binary was built from, with
	// "+dirty" when the working tree had changes outside bench/.
	Syngate  string            `json:"syngate_commit"`
	Machine  Machine           `json:"machine"`
	Settings Settings          `json:"settings"`
	Ceilings Ceilings          `json:"ceilings"`
	Defenses []DefenseResult   `json:"defenses"`
	Ratios   []Ratio           `json:"ratios"`
	Method   map[string]string `json:"method"`
}

// Machine says where the figures come from.
type Machine struct {
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	HAProxy  string `json:"haproxy,omitempty"`
	Nftables string `json:"nftables,omitempty"`
}

// Settings are the knobs of the run.
type Settings struct {
	FloodSeconds    float64   `json:"flood_seconds"`
	FloodSteps      []float64 `json:"flood_steps"` // fractions of the generator's maximum
	LegitRate       int       `json:"legit_conns_per_sec"`
	ConnectTimeout  float64   `json:"legit_connect_timeout_s"`
	RequestBytes    int       `json:"request_bytes"`
	ResponseBytes   int       `json:"response_bytes"`
	ConnRateSeconds float64   `json:"max_conn_rate_seconds"`
	ConnRateWorkers int       `json:"max_conn_rate_workers"`
	BulkBytes       int64     `json:"bulk_bytes"`
}

// Ceilings are what the path itself allows on this machine: the flood
// generator's maximum and the packet rates of the cheapest possible XDP
// programs on the gateway's client-facing interface.
type Ceilings struct {
	FloodMaxPPS float64 `json:"flood_max_pps"`
	XDPDropPPS  float64 `json:"xdp_drop_pps"`
	// XDPDropCPUPerMSYN is the machine's busy CPU seconds per million
	// SYNs while the gateway drops them in XDP: the floor every defense
	// pays before it does anything (generation and delivery included).
	XDPDropCPUPerMSYN     float64 `json:"xdp_drop_busy_cpu_s_per_msyn"`
	XDPDropSoftirqPerMSYN float64 `json:"xdp_drop_softirq_cpu_s_per_msyn"`
	XDPTXPPS              float64 `json:"xdp_tx_pps"`
	// XDPTXSynAckPPS is the XDP_TX bounce as the client side saw it.
	XDPTXSynAckPPS float64 `json:"xdp_tx_synacks_at_client_pps"`
	// XDPTXCPUPerMSYN is the site CPU of the bounce in the defenses'
	// measure (softirq seconds per million SYNs; no process): the least a
	// defense answering every SYN in XDP can cost on this path.
	XDPTXCPUPerMSYN float64 `json:"xdp_tx_cpu_s_per_msyn"`
	Error           string  `json:"error,omitempty"`
}

// DefenseResult is one defense's figures.
type DefenseResult struct {
	Key   string `json:"key"`
	Name  string `json:"name"`
	How   string `json:"how"`
	Error string `json:"error,omitempty"`

	MaxConnsPerSec float64 `json:"max_new_conns_per_sec"`
	ConnRateErrors int     `json:"max_conn_rate_errors"`
	BulkMBps       float64 `json:"bulk_mb_per_sec"`
	RSSBytes       uint64  `json:"rss_bytes,omitempty"`
	PeakRSSBytes   uint64  `json:"peak_rss_bytes,omitempty"`
	Steps          []Step  `json:"steps"`
}

// Step is one flood rate with legitimate clients running through it.
type Step struct {
	Fraction   float64 `json:"fraction"`
	OfferedPPS float64 `json:"offered_pps"`
	FloodPPS   float64 `json:"flood_pps"`
	FloodSent  uint64  `json:"flood_sent"`

	Attempts     int     `json:"legit_attempts"`
	Succeeded    int     `json:"legit_succeeded"`
	SuccessRate  float64 `json:"legit_success_rate"`
	ConnectP50Ms float64 `json:"connect_p50_ms"`
	ConnectP99Ms float64 `json:"connect_p99_ms"`
	RequestP50Ms float64 `json:"request_p50_ms"`
	RequestP99Ms float64 `json:"request_p99_ms"`

	// Failures of legitimate attempts by kind, and the latest error.
	Failures  map[string]uint64 `json:"legit_failures,omitempty"`
	LastError string            `json:"legit_last_error,omitempty"`

	SynAcksPerSec float64 `json:"synacks_per_sec"`

	CPUProcessS float64 `json:"cpu_process_s"`
	CPUSoftirqS float64 `json:"cpu_softirq_s"`
	CPUBusyS    float64 `json:"cpu_busy_s"`
	// CPUOtherS is busy time neither the bench process, the defense's
	// process nor softirq accounts for: other programs on the machine
	// (and kernel threads). Much of it means the step was disturbed.
	CPUOtherS float64 `json:"cpu_other_s"`
	// CPUCapacityS is the window's length times the number of cores.
	CPUCapacityS float64 `json:"cpu_capacity_s"`
	// CPUPerMSYN is (process + softirq) CPU seconds per million flood SYNs.
	CPUPerMSYN float64 `json:"cpu_s_per_msyn"`
	// CPUMarginalPerMSYN is the machine's busy CPU per million SYNs above
	// the XDP_DROP floor.
	CPUMarginalPerMSYN float64 `json:"cpu_marginal_s_per_msyn"`
}

// Ratio is one of the targets the issue asks to show.
type Ratio struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"` // NaN-free: 0 when a side is missing
	Note  string  `json:"note,omitempty"`
	// Unit is empty for a ratio, else the unit of an absolute Value.
	Unit string `json:"unit,omitempty"`
}

// maxStep is the step with the highest offered flood rate.
func (d *DefenseResult) maxStep() *Step {
	var m *Step
	for i := range d.Steps {
		if m == nil || d.Steps[i].Fraction > m.Fraction {
			m = &d.Steps[i]
		}
	}
	return m
}

// peakSynAcks is the highest SYN-ACK rate of any flood step: the defense's
// answering capacity as far as the flood could probe it. The top step is not
// always the highest, since the generator shares the cores with the defense.
func (d *DefenseResult) peakSynAcks() float64 {
	m := 0.0
	for _, s := range d.Steps {
		if s.Fraction > 0 {
			m = max(m, s.SynAcksPerSec)
		}
	}
	return m
}
