package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// Source is what the daemon exposes; the gateway implements it.
type Source interface {
	Status() Status
	// Flows calls fn for the flows the filter selects, at most limit of
	// them (0: all), and returns how many it selects in all.
	Flows(f Filter, limit int, fn func(Flow)) (total int)
}

// Options configure the endpoint.
type Options struct {
	// Path of the unix socket. Its directory is created (0750) if missing.
	Path string
	// Mode of the socket: 0600 (root only) or 0660 (and the socket's
	// group, the daemon's primary group).
	Mode os.FileMode
}

// Server is a running control endpoint.
type Server struct {
	mux  *http.ServeMux
	srv  *http.Server
	path string
	ino  uint64 // the socket file we created, so Close removes only ours
	log  *slog.Logger
}

// ErrInUse is returned by Serve when another live process answers on the
// socket.
var ErrInUse = errors.New("control socket in use by another process")

// Serve listens on opts.Path and serves src until Close.
func Serve(opts Options, src Source, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if err := removeStale(opts.Path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", opts.Path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The socket is created with the umask's mode; until this chmod it is
	// at most as open as the directory, which systemd's RuntimeDirectory
	// (or the MkdirAll above) keeps at 0750.
	if err := os.Chmod(opts.Path, opts.Mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket mode: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(opts.Path, &st); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{mux: http.NewServeMux(), path: opts.Path, ino: st.Ino, log: log}
	s.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, src.Status())
	})
	s.mux.HandleFunc("GET /v1/flows", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := Filter{Service: q.Get("service"), Client: q.Get("client"), Backend: q.Get("backend")}
		limit := 0
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 0 {
				http.Error(w, "limit: want a count, 0 for all", http.StatusBadRequest)
				return
			}
			limit = n
		}
		resp := FlowList{Flows: []Flow{}}
		resp.Total = src.Flows(f, limit, func(fl Flow) {
			if f.Match(fl) {
				resp.Flows = append(resp.Flows, fl)
			}
		})
		// Oldest first within a service: the order an operator reads a
		// connection table in, stable between two calls.
		sort.Slice(resp.Flows, func(i, j int) bool {
			a, b := resp.Flows[i], resp.Flows[j]
			if a.Service != b.Service {
				return a.Service < b.Service
			}
			if !a.Created.Equal(b.Created) {
				return a.Created.Before(b.Created)
			}
			return a.Client < b.Client
		})
		writeJSON(w, resp)
	})
	s.servePprof()
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Handle adds an endpoint, e.g. "POST /v1/reload". Call it right after
// Serve; patterns are those of http.ServeMux.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Close stops serving and removes the socket if it is still ours.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	var st syscall.Stat_t
	if syscall.Stat(s.path, &st) == nil && st.Ino == s.ino {
		os.Remove(s.path)
	}
	return err
}

// removeStale removes a socket file left by a daemon that is gone, and
// refuses one that a live process answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("control socket %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w", path, ErrInUse)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale control socket: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
