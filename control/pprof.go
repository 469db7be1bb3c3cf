package control

import (
	"net/http/pprof"
)

// servePprof adds Go's profiling endpoints under /debug/pprof/. They are on
// the control socket only (root, or its group), never on the metrics
// listener: a CPU profile of the handshake engine under load is what
// bench -profile fetches, and a profile costs nothing until asked for.
func (s *Server) servePprof() {
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
