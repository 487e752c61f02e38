package clusters

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/client-go/rest"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// fakeSource hands out whatever targets (or error) it was last given.
type fakeSource struct {
	mu      sync.Mutex
	targets []Target
	err     error
}

func (s *fakeSource) set(err error, ts ...Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.targets, s.err = ts, err
}

func (s *fakeSource) Targets() ([]Target, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.targets), s.err
}

// invalid is a target whose kubeconfig entry cannot be used: its cluster runs without
// any connection.
func invalid(name, fingerprint string) Target {
	return Target{Name: name, Context: name, Config: &rest.Config{}, Fingerprint: fingerprint, Err: fmt.Errorf("context %s: no user entry", name)}
}

// unreachable is a target whose apiserver refuses connections.
func unreachable(name, fingerprint string) Target {
	return Target{Name: name, Context: name, Config: &rest.Config{Host: "https://127.0.0.1:1"}, Fingerprint: fingerprint}
}

func testFleetOptions() FleetOptions {
	return FleetOptions{
		Cluster: Options{
			RequestTimeout: 500 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
			RediscoveryInterval: 100 * time.Millisecond, IdleProofInterval: time.Second,
		},
		StopTimeout: 5 * time.Second,
	}
}

func isDone(c *Cluster) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

func waitPhase(t *testing.T, f *Fleet, name string, want Phase) {
	t.Helper()
	testfleet.Eventually(t, 10*time.Second, name+" "+string(want), func() (bool, string) {
		s, ok := f.ClusterStatus(name)
		if !ok {
			return false, "not in the fleet"
		}
		return s.Phase == want, fmt.Sprintf("phase %s %s: %s", s.Phase, s.Reason, s.Message)
	})
}

func TestFleetApplyFollowsTheSource(t *testing.T) {
	src := &fakeSource{}
	f := NewFleet(src, testFleetOptions())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer f.stopAll()

	src.set(nil, invalid("a", "a1"), unreachable("b", "b1"))
	f.apply(ctx)
	if got := f.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("clusters %v, want [a b]", got)
	}
	if !f.Loaded() || f.LoadError() != nil {
		t.Fatalf("Loaded %v, LoadError %v after a good load", f.Loaded(), f.LoadError())
	}
	// Both run: each reports its own failure, neither blocks the other.
	waitPhase(t, f, "a", PhaseInvalid)
	waitPhase(t, f, "b", PhaseUnreachable)
	a0, b0 := f.Cluster("a"), f.Cluster("b")

	// b's entry changes, c appears, a is untouched.
	src.set(nil, invalid("a", "a1"), unreachable("b", "b2"), invalid("c", "c1"))
	f.apply(ctx)
	if got := f.Names(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("clusters %v, want [a b c]", got)
	}
	if f.Cluster("a") != a0 || isDone(a0) {
		t.Error("unchanged cluster a was restarted")
	}
	b1 := f.Cluster("b")
	if b1 == b0 {
		t.Fatal("b's fingerprint changed but it was not restarted")
	}
	if !isDone(b0) {
		t.Error("the old b is not stopped when apply returns")
	}
	if b1.target.Fingerprint != "b2" || isDone(b1) {
		t.Errorf("new b: fingerprint %q, done %v", b1.target.Fingerprint, isDone(b1))
	}
	if s, _ := f.ClusterStatus("c"); s.Name != "c" {
		t.Errorf("c's status: %+v", s)
	}
	waitPhase(t, f, "b", PhaseUnreachable)
	c0 := f.Cluster("c")

	// A source that fails keeps every running cluster.
	loadErr := errors.New("kubeconfig: yaml: line 3: mapping values are not allowed")
	src.set(loadErr)
	f.apply(ctx)
	if !errors.Is(f.LoadError(), loadErr) {
		t.Errorf("LoadError %v, want %v", f.LoadError(), loadErr)
	}
	if !f.Loaded() {
		t.Error("Loaded went false after a failed reload")
	}
	for name, c := range map[string]*Cluster{"a": a0, "b": b1, "c": c0} {
		if f.Cluster(name) != c || isDone(c) {
			t.Errorf("%s was replaced or stopped by a failed load", name)
		}
	}

	// Removed targets stop; the error clears with the next good load.
	src.set(nil, invalid("c", "c1"))
	f.apply(ctx)
	if got := f.Names(); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("clusters %v, want [c]", got)
	}
	if f.LoadError() != nil {
		t.Errorf("LoadError %v after a good load", f.LoadError())
	}
	if !isDone(a0) || !isDone(b1) {
		t.Errorf("removed clusters still running: a done %v, b done %v", isDone(a0), isDone(b1))
	}
	if f.Cluster("c") != c0 || isDone(c0) {
		t.Error("c was restarted though unchanged")
	}
	if _, ok := f.ClusterStatus("a"); ok {
		t.Error("status of a removed cluster")
	}
	if _, ok := f.Freshness("a", "pods"); ok {
		t.Error("freshness of a removed cluster")
	}
}

func TestFleetNotLoadedUntilTheSourceReadsOnce(t *testing.T) {
	src := &fakeSource{}
	f := NewFleet(src, testFleetOptions())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer f.stopAll()

	src.set(errors.New("open /kube/config: no such file or directory"))
	f.apply(ctx)
	if f.Loaded() || f.LoadError() == nil || !strings.Contains(f.LoadError().Error(), "no such file") {
		t.Fatalf("after a failed first load: Loaded %v, LoadError %v", f.Loaded(), f.LoadError())
	}
	if n := len(f.Names()); n != 0 {
		t.Fatalf("%d clusters from a failed load", n)
	}
	// An empty but readable source is loaded: the fleet knows it has no clusters.
	src.set(nil)
	f.apply(ctx)
	if !f.Loaded() || f.LoadError() != nil {
		t.Fatalf("after an empty good load: Loaded %v, LoadError %v", f.Loaded(), f.LoadError())
	}
}

func TestFleetStartReloadsAndStopsEverything(t *testing.T) {
	src := &fakeSource{}
	src.set(nil, invalid("a", "a1"))
	opts := testFleetOptions()
	opts.ReloadInterval = time.Hour // only Reload triggers a reload
	f := NewFleet(src, opts)
	stop := runFleet(t, f)

	testfleet.Eventually(t, 10*time.Second, "first load", func() (bool, string) {
		return slices.Equal(f.Names(), []string{"a"}), fmt.Sprint(f.Names())
	})
	a := f.Cluster("a")
	src.set(nil, invalid("a", "a1"), invalid("b", "b1"))
	f.Reload()
	testfleet.Eventually(t, 10*time.Second, "reload", func() (bool, string) {
		return slices.Equal(f.Names(), []string{"a", "b"}), fmt.Sprint(f.Names())
	})
	b := f.Cluster("b")
	if f.Cluster("a") != a {
		t.Error("a restarted on reload")
	}

	if err := stop(); err != nil {
		t.Errorf("Start: %v", err)
	}
	if !isDone(a) || !isDone(b) {
		t.Errorf("clusters still running after Start returned: a %v, b %v", isDone(a), isDone(b))
	}
	if n := len(f.Names()); n != 0 {
		t.Errorf("%d clusters listed after Start returned", n)
	}
}

// runFleet starts f until the test ends; stop ends it and returns what Start returned,
// failing the test if Start does not return within 10 s of its context ending.
func runFleet(t *testing.T, f *Fleet) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Start(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Error("Start did not return after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// fleetCatcher is an EventHandler that only keeps the fleet handed to it.
type fleetCatcher struct{ got FleetView }

func (*fleetCatcher) OnAdd(*InformerRef, *Object)             {}
func (*fleetCatcher) OnUpdate(*InformerRef, *Object, *Object) {}
func (*fleetCatcher) OnDelete(*InformerRef, *Object)          {}
func (*fleetCatcher) OnStop(*InformerRef)                     {}
func (c *fleetCatcher) OnFleet(f FleetView)                   { c.got = f }

// TestNewFleetHandsItselfToTheHandler: the handler (the index) learns the fleet it is
// fed by when the fleet is made, before anything can query it.
func TestNewFleetHandsItselfToTheHandler(t *testing.T) {
	h := &fleetCatcher{}
	f := NewFleet(nil, FleetOptions{Cluster: Options{Handler: h}})
	if h.got != FleetView(f) {
		t.Fatalf("handler got %v, want the fleet", h.got)
	}
	if f.Loaded() {
		t.Error("a fleet that has not read its source says it is loaded")
	}
}

// TestFleetReleasesMemoryOnceSettled: once every cluster of the first load has settled
// (here at once: their kubeconfig entries are unusable), the fleet returns the initial
// sync's memory to the operating system, and says so.
func TestFleetReleasesMemoryOnceSettled(t *testing.T) {
	src := &fakeSource{}
	src.set(nil, invalid("a", "a1"), invalid("b", "b1"))
	opts := testFleetOptions()
	opts.ReloadInterval = 10 * time.Millisecond
	core, logs := observer.New(zap.InfoLevel)
	opts.Logger = zap.New(core)
	f := NewFleet(src, opts)
	runFleet(t, f)
	testfleet.Eventually(t, 10*time.Second, "memory released", func() (bool, string) {
		return logs.FilterMessageSnippet("returned its memory").Len() > 0, fmt.Sprint(logs.Len(), " log lines")
	})
	e := logs.FilterMessageSnippet("returned its memory").All()[0]
	if n := e.ContextMap()["clusters"]; n != int64(2) {
		t.Errorf("released after %v clusters settled, want 2", n)
	}
}
