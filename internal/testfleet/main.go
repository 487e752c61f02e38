package testfleet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Main runs a test package against a fleet: it starts opts.Clusters clusters in a fresh
// folder under $FLEETCACHE_TEST_ROOT (default: the OS temp dir), stores it in *fleet, runs
// the tests, and tears the fleet down, also on SIGINT/SIGTERM. Use it from TestMain:
//
//	var fleet *testfleet.Fleet
//	func TestMain(m *testing.M) { testfleet.Main(m, testfleet.Options{}, &fleet) }
//
// With -short the fleet is not started and *fleet stays nil; tests that need it skip.
func Main(m *testing.M, opts Options, fleet **Fleet) {
	os.Exit(runMain(m, opts, fleet))
}

// Run is Main without the exit: it returns the tests' exit code, for a package that has
// more to check once they ran.
func Run(m *testing.M, opts Options, fleet **Fleet) int { return runMain(m, opts, fleet) }

func runMain(m *testing.M, opts Options, fleet **Fleet) int {
	testing.Init()
	if !parseShort() {
		if err := ensureBinaries(&opts); err != nil {
			fmt.Fprintln(os.Stderr, "testfleet:", err)
			return 1
		}
		root := os.Getenv("FLEETCACHE_TEST_ROOT")
		if root != "" {
			if err := os.MkdirAll(root, 0o755); err != nil {
				fmt.Fprintln(os.Stderr, "testfleet:", err)
				return 1
			}
		}
		dir, err := os.MkdirTemp(root, "fleet-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "testfleet:", err)
			return 1
		}
		opts.Dir = dir

		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigs)
		f, err := Up(context.Background(), opts)
		teardown := func() {
			if f != nil {
				_ = f.Down()
			}
			_, _ = Reap(dir)
			if os.Getenv("FLEETCACHE_KEEP_FLEET") == "" {
				_ = os.RemoveAll(dir)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "testfleet: fleet did not come up:", err)
			teardown()
			return 1
		}
		*fleet = f
		// An interrupted run still tears down: the tests' own goroutines are abandoned.
		go func() {
			sig := <-sigs
			fmt.Fprintf(os.Stderr, "testfleet: %v: tearing the fleet down\n", sig)
			teardown()
			os.Exit(130)
		}()
		defer teardown()
	}
	return m.Run()
}

// parseShort reports -short without calling flag.Parse before testing does.
func parseShort() bool {
	for _, a := range os.Args[1:] {
		if a == "-test.short" || a == "-test.short=true" || a == "--test.short" {
			return true
		}
	}
	return false
}

// ensureBinaries fills opts.BinDir from $FLEETCACHE_BIN or, failing that, by running
// hack/build-bins.sh (a no-op when the cache is current).
func ensureBinaries(opts *Options) error {
	if opts.BinDir != "" || os.Getenv("FLEETCACHE_BIN") != "" {
		return nil
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(root, "hack", "build-bins.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("hack/build-bins.sh: %w", err)
	}
	opts.BinDir = strings.TrimSpace(string(out))
	return nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "build-bins.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no hack/build-bins.sh above the working directory; set FLEETCACHE_BIN")
		}
		dir = parent
	}
}

// Eventually polls cond every 100ms until it holds, and fails the test if it does not
// within timeout; cond's message explains the last failed attempt.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		var ok bool
		ok, msg = cond()
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s: %s", what, timeout, msg)
	}
}
