package lab

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Daemon is a long-running program started inside a namespace (syngate,
// HAProxy, ...), logging to a file. It is only ever signalled by its own PID,
// which is the program's: it is forked from a thread inside the namespace,
// with no wrapper process in between.
type Daemon struct {
	name    string
	cmd     *Cmd
	logPath string
	log     *os.File
	exited  chan error
}

// StartDaemon runs name with args inside ns, with stdout and stderr going to
// logPath. It gets its own process group, so a Ctrl-C at the terminal
// reaches only the caller, which then stops the daemon in order.
func StartDaemon(ns *NS, logPath, name string, args ...string) (*Daemon, error) {
	d := &Daemon{name: name, logPath: logPath, exited: make(chan error, 1)}
	var err error
	if d.log, err = os.Create(logPath); err != nil {
		return nil, fmt.Errorf("create log of %s: %w", name, err)
	}
	d.cmd = ns.Command(name, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		d.log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	return d, nil
}

// PID is the daemon's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Alive reports an early exit as an error carrying the log's tail.
func (d *Daemon) Alive() error {
	select {
	case err := <-d.exited:
		d.exited <- err
		return fmt.Errorf("%s exited: %v\n%s", d.name, err, d.Logs())
	default:
		return nil
	}
}

// WaitReady polls ok until it returns true, the daemon exits, or timeout.
func (d *Daemon) WaitReady(timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if err := d.Alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v\n%s", d.name, timeout, d.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// WaitFile waits until path exists: a daemon's ready file.
func (d *Daemon) WaitFile(path string, timeout time.Duration) error {
	return d.WaitReady(timeout, func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
}

// Logs returns the tail of the daemon's log.
func (d *Daemon) Logs() string {
	b, _ := os.ReadFile(d.logPath)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// ErrKilled is returned by Stop when the daemon ignored SIGTERM.
var ErrKilled = errors.New("did not stop on SIGTERM; killed")

// Stop sends SIGTERM to the daemon's PID and SIGKILL after grace. It is
// idempotent.
func (d *Daemon) Stop(grace time.Duration) error {
	if d.cmd.Process == nil {
		return nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case e := <-d.exited:
		d.exited <- e
	case <-time.After(grace):
		d.cmd.Process.Kill()
		e := <-d.exited
		d.exited <- e
		err = fmt.Errorf("%s: %w", d.name, ErrKilled)
	}
	d.log.Close()
	return err
}

// Signal sends sig to the daemon's PID (SIGKILL for a crash, SIGUSR1 ...).
func (d *Daemon) Signal(sig os.Signal) error {
	if d.cmd.Process == nil {
		return errors.New("not started")
	}
	return d.cmd.Process.Signal(sig)
}

// Exited reports whether the daemon has exited.
func (d *Daemon) Exited() bool {
	select {
	case err := <-d.exited:
		d.exited <- err
		return true
	default:
		return false
	}
}
