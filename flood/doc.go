// Package flood is a lab test instrument: a bounded SYN flood with spoofed
// sources, sent from inside a lab namespace at whatever rate the machine
// allows, to see how syngate (or a plain kernel) holds up.
//
//	top, _ := lab.NewTopology(t, lab.Options{})
//	res, err := flood.Run(ctx, flood.Config{
//		From:     top.Client,
//		Target:   netip.AddrPortFrom(top.VIP4, 80),
//		Packets:  200_000,
//		Duration: 3 * time.Second,
//	})
//	// res.Sent, res.Errors, res.PPS
//
// Frames leave through an AF_PACKET socket bound to the client's interface,
// many per sendmmsg call, past the qdisc. Each worker keeps a batch of
// frames built once from a template and rewrites only the random fields
// (source address and port, ISN, IPv4 ID) with checksums updated from
// precomputed sums, so sending allocates nothing.
//
// The package refuses to be pointed anywhere but the lab: the namespace
// must be a live one made by package lab (name prefix LabPrefix, not the
// host's), the target must be in the lab's documentation ranges
// (TargetRangesText) and the spoofed sources inside SpoofV4 or SpoofV6. Every
// flood has both a packet count and a duration, and stops by itself.
package flood
