package testfleet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one child process (etcd or kube-apiserver) tracked by a PID file. The PID file
// lets a later invocation (hack/fleet.sh stop alpha) or a reaper find the process; the
// command line check guards against a recycled PID.
type proc struct {
	bin     string
	args    []string
	pidFile string
	logFile string
	// detach makes the process outlive the caller (its own session, no parent-death
	// signal). Otherwise the kernel kills it when the caller dies, even by SIGKILL.
	detach bool

	exited chan struct{} // closed when an attached child has been reaped
}

func (p *proc) start() error {
	if pid, ok := p.pid(); ok {
		return fmt.Errorf("%s already running as pid %d", p.bin, pid)
	}
	logf, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "\n=== %s start %s %s\n", time.Now().Format(time.RFC3339), p.bin, strings.Join(p.args, " "))

	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if p.detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		// Own process group so a terminal's Ctrl-C reaches only the test binary, which then
		// cleans up; Pdeathsig covers the cases where it cannot (SIGKILL, test timeout).
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	if err := os.WriteFile(p.pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	if p.detach {
		return cmd.Process.Release()
	}
	p.exited = make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(p.exited)
	return nil
}

// pid returns the PID of the running process, if the PID file names a live (non-zombie)
// process running this binary.
func (p *proc) pid() (int, bool) {
	raw, err := os.ReadFile(p.pidFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, processRuns(pid, p.bin)
}

// processRuns reports whether pid is alive, not a zombie, and runs bin.
func processRuns(pid int, bin string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	if string(argv0) != bin {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name: "pid (comm) S ...".
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return true
}

// exitedSinceStart reports whether the process this proc started has ended. Unlike pid,
// it does not look at the command line, which is briefly the parent's during exec.
func (p *proc) exitedSinceStart() bool {
	if p.exited != nil {
		select {
		case <-p.exited:
			return true
		default:
			return false
		}
	}
	raw, err := os.ReadFile(p.pidFile)
	if err != nil {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(raw)) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

var errNotRunning = errors.New("not running")

func (p *proc) signal(sig syscall.Signal) error {
	pid, ok := p.pid()
	if !ok {
		return fmt.Errorf("%s: %w", p.bin, errNotRunning)
	}
	return syscall.Kill(pid, sig)
}

// kill sends SIGKILL and waits until the process is gone. A stopped process dies too.
func (p *proc) kill() error {
	pid, ok := p.pid()
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s (pid %d): %w", p.bin, pid, err)
	}
	if p.exited != nil {
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.bin, pid)
		}
	} else {
		deadline := time.Now().Add(10 * time.Second)
		for processRuns(pid, p.bin) {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.bin, pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	_ = os.Remove(p.pidFile)
	return nil
}

// Reap SIGKILLs every process whose command line mentions dir: the processes of fleets
// rooted there that outlived their owner. It returns the PIDs it killed.
func Reap(dir string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var killed []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(dir)) {
			continue
		}
		argv0, _, _ := bytes.Cut(cmdline, []byte{0})
		base := string(argv0[bytes.LastIndexByte(argv0, '/')+1:])
		if base != "etcd" && !strings.HasPrefix(base, "kube-apiserver") { // kube-apiserver-1.32 too
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed = append(killed, pid)
		}
	}
	return killed, nil
}
