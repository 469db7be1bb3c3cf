// Command bench compares syngate with the usual SYN-flood defenses on one
// machine: the same lab topology and the same spoofed flood, one defense
// after another, in namespaces it creates and always deletes.
//
//	sudo go run ./bench          # the full run, about 10 minutes
//	sudo go run ./bench -quick   # about 2-3 minutes, fewer and shorter steps
//
// It writes bench/results/latest.json, latest.md (a table for the README)
// and success.svg (legitimate success rate against flood rate), and prints
// the table. See bench/README.md for the method.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// bench holds the run's settings and shared state.
type bench struct {
	quick          bool
	cpus           int
	floodDur       time.Duration
	steps          []float64
	legitRate      int
	connectTimeout time.Duration
	connRateDur    time.Duration
	connWorkers    int
	bulkBytes      int64
	floodWorkers   int

	workDir    string
	syngateBin string
	log        *slog.Logger

	floodMax   float64
	floorBusy  float64 // busy CPU s per SYN under XDP_DROP
	floorSoft  float64
	cleanupMu  sync.Mutex
	cleanups   []func()
	cleanedUp  bool
	activeScen *scenario
}

func main() {
	os.Exit(run())
}

func run() int {
	quick := flag.Bool("quick", false, "a short run (about 2-3 minutes): fewer, shorter flood steps")
	out := flag.String("out", "", "results `dir` (default bench/results in the module)")
	only := flag.String("defenses", "", "comma-separated `list` of defenses to run (syngate,kernel,synproxy,haproxy,none); default all")
	noCeil := flag.Bool("no-ceilings", false, "skip the XDP_DROP/XDP_TX ceilings (the flood maximum is then measured against XDP_DROP only briefly)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces, XDP, AF_XDP, nftables)")
		return 2
	}
	b := &bench{quick: *quick, cpus: runtime.NumCPU(), log: log}
	b.configure()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Ctrl-C: the first signal cancels the run, whose deferred cleanups
	// stop the daemons and delete the namespaces; a second one (or a
	// cleanup that hangs) runs the cleanups right away and exits.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		<-sigs
		log.Warn("interrupted: stopping and cleaning up (again to force)")
		cancel()
		select {
		case <-sigs:
		case <-time.After(30 * time.Second):
		}
		b.cleanup()
		os.Exit(130)
	}()
	defer b.cleanup()

	modDir, err := moduleDir()
	if err != nil {
		log.Error("find module", "err", err)
		return 1
	}
	if *out == "" {
		*out = filepath.Join(modDir, "bench", "results")
	}
	if b.workDir, err = os.MkdirTemp("", "syngate-bench-"); err != nil {
		log.Error("work dir", "err", err)
		return 1
	}
	b.addCleanup(func() { os.RemoveAll(b.workDir) })

	b.syngateBin = filepath.Join(b.workDir, "syngate")
	log.Info("building syngate")
	if o, err := exec.Command("go", "build", "-o", b.syngateBin, "github.com/syngate/syngate/cmd/syngate").CombinedOutput(); err != nil {
		log.Error("build syngate", "err", err, "output", string(o))
		return 1
	}

	res := &Results{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Quick:   b.quick,
		Machine: machineInfo(),
		Settings: Settings{
			FloodSeconds: b.floodDur.Seconds(), FloodSteps: b.steps, LegitRate: b.legitRate,
			ConnectTimeout: b.connectTimeout.Seconds(), RequestBytes: len("GET / HTTP/1.0\r\n"),
			ResponseBytes:   len("HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"),
			ConnRateSeconds: b.connRateDur.Seconds(), ConnRateWorkers: b.connWorkers, BulkBytes: b.bulkBytes,
		},
		Method: methodNotes(),
	}

	res.Ceilings = b.ceilings(ctx, !*noCeil)
	if ctx.Err() != nil {
		return 130
	}
	if res.Ceilings.Error != "" && b.floodMax == 0 {
		log.Error("cannot measure the flood's maximum rate", "err", res.Ceilings.Error)
		return 1
	}
	want := map[string]bool{}
	for _, k := range strings.Split(*only, ",") {
		if k = strings.TrimSpace(k); k != "" {
			want[k] = true
		}
	}
	for _, d := range defenses {
		if len(want) > 0 && !want[d.key] {
			continue
		}
		r := b.runDefense(ctx, d)
		if ctx.Err() != nil {
			return 130
		}
		res.Defenses = append(res.Defenses, r)
	}
	res.Ratios = ratios(res)

	printTable(os.Stdout, res)
	if err := writeResults(*out, res); err != nil {
		log.Error("write results", "err", err)
		return 1
	}
	fmt.Printf("\nwrote %s/{latest.json,latest.md,success.svg}\n", *out)
	return 0
}

// configure sets the run's knobs for a quick or a full run.
func (b *bench) configure() {
	b.legitRate = 200
	b.connectTimeout = 3 * time.Second
	b.connWorkers = 64
	b.floodWorkers = b.cpus
	if b.quick {
		b.floodDur = 3 * time.Second
		b.steps = []float64{0, 0.5, 1}
		b.connRateDur = 2 * time.Second
		b.bulkBytes = 128 << 20
	} else {
		b.floodDur = 15 * time.Second
		b.steps = []float64{0, 0.25, 0.5, 1}
		b.connRateDur = 5 * time.Second
		b.bulkBytes = 256 << 20
	}
}

func (b *bench) addCleanup(fn func()) {
	b.cleanupMu.Lock()
	defer b.cleanupMu.Unlock()
	b.cleanups = append(b.cleanups, fn)
}

// cleanup runs every registered cleanup once, newest first, plus the
// scenario in progress.
func (b *bench) cleanup() {
	b.cleanupMu.Lock()
	defer b.cleanupMu.Unlock()
	if b.cleanedUp {
		return
	}
	b.cleanedUp = true
	if b.activeScen != nil {
		b.activeScen.close()
		b.activeScen = nil
	}
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
}

// enter builds a fresh scenario and registers it for cleanup on signals.
func (b *bench) enter(name string) (*scenario, error) {
	s, err := newScenario(b.workDir, name)
	if err != nil {
		return nil, err
	}
	b.cleanupMu.Lock()
	defer b.cleanupMu.Unlock()
	if b.cleanedUp {
		s.close()
		return nil, errStopped
	}
	b.activeScen = s
	return s, nil
}

// leave closes the scenario unless a signal's cleanup already does.
func (b *bench) leave(s *scenario) {
	b.cleanupMu.Lock()
	defer b.cleanupMu.Unlock()
	if b.activeScen == s {
		b.activeScen = nil
		s.close()
	}
}

func moduleDir() (string, error) {
	o, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(o))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the bench from inside the syngate module")
	}
	return filepath.Dir(mod), nil
}
