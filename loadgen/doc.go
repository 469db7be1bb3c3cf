// Package loadgen plays the legitimate clients in lab tests: it opens TCP
// connections from inside a lab namespace at a set concurrency or rate,
// optionally runs a request/response exchange on each, and measures what
// worked, what failed and why, and how long it took. It also has the small
// backends those clients talk to.
//
//	srv, _ := loadgen.Serve(top.Backend, netip.AddrPortFrom(lab.BackendV4.Addr(), 0), loadgen.HTTPishHandler)
//	defer srv.Close()
//	rep, err := loadgen.Run(ctx, loadgen.Config{
//		From:        top.Client,
//		Target:      srv.Addr(),
//		Concurrency: 8,
//		Count:       200,
//		Exchange:    loadgen.HTTPishExchange,
//	})
//	// rep.Successes, rep.Failures.Refused, rep.Connect.P99, ...
//
// Sockets are created inside the namespace (lab.NS.Run) and then used from
// any goroutine. Latencies go into fixed-size log-linear histograms
// (Histogram), so a long load costs no more memory than a short one, and
// Gen.Snapshot can be read while the load runs.
//
// The bulk protocol (BulkHandler, Put, Get) moves deterministic
// pseudo-random data (Stream) and checks it end to end with SHA-256, to
// prove a proxied connection neither loses nor alters a byte.
package loadgen
