package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestSIGTERMEndsKubectlAndClientGoWatches: on SIGTERM the daemon ends the Kubernetes
// API's watch streams itself, as it ends /api/v1's: a real `kubectl get -w` exits and a
// client-go watch's channel closes without an ERROR event, and the daemon exits 0, all
// long before the grace period (5 minutes here), which is when streams left open would
// be cut.
func TestSIGTERMEndsKubectlAndClientGoWatches(t *testing.T) {
	shared := startDaemon(t)
	p := startProcess(t, shared.bin, nil, "--config", shared.config, "--shutdown-grace-period", "5m")
	d := &daemon{url: p.url, bin: shared.bin, config: shared.config, log: p.log, pid: p.cmd.Process.Pid}

	// kubectl get pods -A -w through the fleet context.
	k := newFleetKubectl(t, d)
	kc := exec.Command(filepath.Join(os.Getenv("FLEETCACHE_BIN"), "kubectl"), "--kubeconfig", k.kubeconfig, "--cache-dir", k.cacheDir, "get", "pods", "-A", "-w")
	kc.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	kc.Stderr = &stderr
	stdout, err := kc.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := kc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.Process.Kill() })
	var mu sync.Mutex
	lines := 0
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			lines++
			mu.Unlock()
		}
	}()
	kubectlDone := make(chan error, 1)
	want := len(kubectlSet(t, "pods", "-A"))
	waitFor(t, 60*time.Second, "kubectl printed every pod and watches", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return lines > want, "" // the header and a row per pod
	})
	go func() { kubectlDone <- kc.Wait() }()

	// A client-go watch, past its initial events.
	cs := kubernetes.NewForConfigOrDie(fleetConfig(t, d.bin, d.url, "fleet"))
	w, err := cs.CoreV1().Pods("").Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if ev := <-w.ResultChan(); ev.Type != "ADDED" {
		t.Fatalf("client-go watch: first event %s, want ADDED", ev.Type)
	}

	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	clientGoDone := make(chan error, 1)
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type == "ERROR" {
				clientGoDone <- fmt.Errorf("ERROR event: %w", apierrors.FromObject(ev.Object))
				return
			}
		}
		clientGoDone <- nil
	}()
	for name, done := range map[string]chan error{"kubectl get -w": kubectlDone, "client-go watch": clientGoDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v\n%s", name, err, stderr.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s still running 60s after SIGTERM (grace period 5m): its stream was not ended", name)
		}
	}
	if s := stderr.String(); strings.TrimSpace(s) != "" {
		t.Errorf("kubectl stderr: %s", s)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("daemon exit: %v, want status 0", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("daemon still running 60s after SIGTERM (grace period 5m)")
	}
	t.Logf("kubectl, client-go and the daemon done %s after SIGTERM", time.Since(start).Round(time.Millisecond))
}
