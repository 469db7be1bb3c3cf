package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/syngate/syngate/lab"
)

// process is a defense daemon the bench started inside a namespace. It is
// only ever signalled by its own PID (`ip netns exec` execs the program, so
// the PID is the daemon's).
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	log     *os.File
	exited  chan error
}

// startProcess runs name with args inside ns, logging to a file in dir.
func startProcess(ns *lab.NS, dir, name string, args ...string) (*process, error) {
	p := &process{name: name, logPath: fmt.Sprintf("%s/%s.log", dir, strings.ReplaceAll(name, "/", "_")), exited: make(chan error, 1)}
	var err error
	if p.log, err = os.Create(p.logPath); err != nil {
		return nil, fmt.Errorf("create log of %s: %w", name, err)
	}
	p.cmd = ns.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	// Its own process group, so a Ctrl-C at the terminal reaches only the
	// bench, which then stops the daemon in order.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		p.log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	return p, nil
}

// pid is the daemon's process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// alive reports an early exit as an error carrying the log's tail.
func (p *process) alive() error {
	select {
	case err := <-p.exited:
		p.exited <- err
		return fmt.Errorf("%s exited: %v\n%s", p.name, err, p.logs())
	default:
		return nil
	}
}

// waitReady polls ok until it returns true, the process exits or timeout.
func (p *process) waitReady(timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if err := p.alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v\n%s", p.name, timeout, p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func (p *process) logs() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// stop sends SIGTERM to the daemon's PID and SIGKILL after a grace time.
func (p *process) stop() {
	if p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		p.exited <- err
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		err := <-p.exited
		p.exited <- err
	}
	p.log.Close()
}
