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
	"slices"
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
	quietWait      time.Duration

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
	bin := flag.String("syngate", "", "use this syngate `binary` instead of building cmd/syngate")
	head := flag.Bool("head", false, "build syngate from the last commit (git archive HEAD) instead of the working tree")
	render := flag.String("render", "", "only re-render latest.md and success.svg from this results `file` (JSON)")
	hold := flag.String("hold", "", "set up one `defense` in a lab, print its namespaces and keep it until Ctrl-C (for looking at it by hand)")
	prof := profileOpts{}
	flag.StringVar(&prof.key, "profile", "", "set up one `defense` and profile it: CPU per connection and per flood SYN, BPF programs' run time, perf and pprof profiles (see bench/PROFILE.md)")
	flag.DurationVar(&prof.dur, "profile-time", 10*time.Second, "length of each -profile phase")
	flag.IntVar(&prof.rate, "profile-rate", 0, "flood `pps` of the -profile flood phase (0: as fast as the generator goes)")
	flag.StringVar(&prof.phases, "profile-phases", "conn,flood", "the -profile phases to run, in order: conn (new connections, no flood), calm (the legitimate clients alone), flood (with them)")
	flag.BoolVar(&prof.perf, "profile-perf", true, "record system-wide stacks with perf(1) in each -profile phase")
	flag.BoolVar(&prof.pprof, "profile-pprof", true, "fetch a Go CPU profile of syngate in each -profile phase")
	queues := flag.Bool("queues", false, "measure syngate's scaling with 1, 2 and 4 receive queues instead of the comparison (see README, \"All cores of one machine\")")
	rounds := flag.Int("rounds", 5, "with -queues: interleaved `rounds` of 1, 2 and 4 queues")
	window := flag.Duration("window", 3*time.Second, "with -queues: each measurement's `duration`")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if *render != "" {
		if err := rerender(*render, *out); err != nil {
			log.Error("render", "err", err)
			return 1
		}
		return 0
	}
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

	if *bin != "" {
		b.syngateBin = *bin
	} else if b.syngateBin, err = b.buildSyngate(modDir, *head); err != nil {
		log.Error("build syngate", "err", err)
		return 1
	}

	if *hold != "" {
		return b.holdDefense(ctx, *hold)
	}
	if prof.key != "" {
		prof.outDir, prof.workers = filepath.Join(*out, "profile"), b.connWorkers
		return b.profileDefense(ctx, prof)
	}
	if *queues {
		b.quietWait = 10 * time.Second
		return b.queueScaling(ctx, *rounds, *window, *out, syngateCommit(modDir, *head || *bin != ""))
	}

	res := &Results{
		Syngate: syngateCommit(modDir, *head || *bin != ""),
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
	if len(want) == 0 || want["haproxy"] {
		b.ensureHAProxy()
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
	b.quietWait = 60 * time.Second
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
func (b *bench) enter(name string) (*scenario, error) { return b.enterQueues(name, 0) }

// enterQueues is enter with queues receive and transmit queues on every
// link of the lab.
func (b *bench) enterQueues(name string, queues int) (*scenario, error) {
	s, err := newScenario(b.workDir, name, queues)
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

// holdDefense sets up one defense and keeps it until the context ends.
func (b *bench) holdDefense(ctx context.Context, key string) int {
	d, s, code := b.upDefense(ctx, key)
	if s == nil {
		return code
	}
	defer b.leave(s)
	fmt.Printf("%s is up: client %s, gateway %s, backend %s, service %s, logs in %s\n",
		d.name, s.top.Client, s.top.Gateway, s.top.Backend, s.target, s.dir)
	// One short probe of the legitimate clients, as a smoke check.
	if g, err := b.legit(ctx, s, 2*time.Second); err == nil {
		fmt.Printf("probe: %v\n", g.Wait())
	}

	fmt.Println("Ctrl-C ends it")
	<-ctx.Done()
	return 0
}

// upDefense builds the lab of the defense named key and sets it up. With a
// nil scenario it failed (logged; the exit code is the second result);
// otherwise the caller leaves the scenario when done.
func (b *bench) upDefense(ctx context.Context, key string) (*defense, *scenario, int) {
	i := slices.IndexFunc(defenses, func(d defense) bool { return d.key == key })
	if i < 0 {
		b.log.Error("unknown defense", "defense", key)
		return nil, nil, 2
	}
	d := &defenses[i]
	s, err := b.enter(d.key)
	if err != nil {
		b.log.Error("lab", "err", err)
		return nil, nil, 1
	}
	if err := d.setup(ctx, b, s); err != nil {
		b.log.Error("setup", "err", err)
		b.leave(s)
		return nil, nil, 1
	}
	return d, s, 0
}

// buildSyngate builds cmd/syngate from the working tree; when that does not
// compile (someone is halfway through an edit) it builds the last commit
// instead, from a `git archive` copy, and says so.
func (b *bench) buildSyngate(modDir string, head bool) (string, error) {
	out := filepath.Join(b.workDir, "bin", "syngate")
	if !head {
		b.log.Info("building syngate")
		o, err := exec.Command("go", "build", "-o", out, "github.com/syngate/syngate/cmd/syngate").CombinedOutput()
		if err == nil {
			return out, nil
		}
		b.log.Warn("the working tree does not build; building the last commit", "err", err, "output", strings.TrimSpace(string(o)))
	} else {
		b.log.Info("building syngate from the last commit")
	}
	src := filepath.Join(b.workDir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	sh := fmt.Sprintf("git -C %q archive HEAD | tar -x -C %q", modDir, src)
	if o, err := exec.Command("sh", "-c", sh).CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive HEAD: %w: %s", err, o)
	}
	cmd := exec.Command("go", "build", "-o", out, "./cmd/syngate")
	cmd.Dir = src
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the last commit: %w: %s", err, o)
	}
	return out, nil
}

// syngateCommit names the commit syngate was built from; clean is true
// when it was not built from the working tree.
func syngateCommit(modDir string, clean bool) string {
	o, err := exec.Command("git", "-C", modDir, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(o))
	if clean {
		return c
	}
	st, err := exec.Command("git", "-C", modDir, "status", "--porcelain", "--", ".", ":!bench").Output()
	if err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "+dirty"
	}
	return c
}

// ensureHAProxy installs Debian's haproxy package when it is missing, so
// one command runs the whole comparison on a fresh machine. Only the
// binary is used (the bench runs it in a lab namespace with its own
// config); a failure only costs the HAProxy row.
func (b *bench) ensureHAProxy() {
	if _, err := exec.LookPath("haproxy"); err == nil {
		return
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		b.log.Warn("haproxy is not installed and there is no apt-get: the HAProxy row will be an error")
		return
	}
	b.log.Info("installing haproxy with apt-get")
	cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "haproxy")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.log.Warn("apt-get install haproxy failed: the HAProxy row will be an error", "err", err, "output", strings.TrimSpace(string(o)))
	}
}
