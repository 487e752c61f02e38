package clusters_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
)

// TestTwoHundredContexts: a kubeconfig of 100, then 200 contexts over the fleet's three
// apiservers (each context its own client, discovery and informers), with the daemon's
// defaults (13 resources, 4 concurrent initial lists, the probe budget). Every context
// reaches Synced, each holds as many objects of each resource as kubectl lists on its
// apiserver, and removing 100 contexts from the kubeconfig gives their memory back: the
// heap after GC falls back within 20% of the 100-context figure.
func TestTwoHundredContexts(t *testing.T) {
	seeded(t)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := fleet.WriteManyContexts(path, 100); err != nil {
		t.Fatal(err)
	}
	index := aggregator.New(nil, aggregator.Options{})
	f := clusters.NewFleet(clusters.KubeconfigSource{Paths: []string{path}}, clusters.FleetOptions{
		ReloadInterval: 200 * time.Millisecond,
		Cluster: clusters.Options{
			Handler: index, ListLimiter: clusters.NewListLimiter(4), Budget: clusters.NewRequestBudget(clusters.DefaultProbeBudget),
		},
		Logger: zap.NewNop(), // a test logger would hold every line in memory, and skew the heap
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.Start(ctx); close(done) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("fleet did not stop within a minute")
		}
	}()
	allSynced := func(n int) func() (bool, string) {
		return func() (bool, string) {
			rs := f.Readiness()
			synced := 0
			var others []string // what the others are, for a failure's message
			for _, r := range rs {
				if r.Synced {
					synced++
				} else if len(others) < 5 {
					others = append(others, fmt.Sprintf("%s %s/%s: %s", r.Name, r.Phase, r.Reason, r.Message))
				}
			}
			return len(rs) == n && synced == n, fmt.Sprintf("%d clusters, %d synced; not: %v", len(rs), synced, others)
		}
	}
	eventually(t, 5*time.Minute, "100 contexts synced", allSynced(100))
	heap100, goroutines100 := liveHeap(), runtime.NumGoroutine()

	if err := fleet.WriteManyContexts(path, 200); err != nil {
		t.Fatal(err)
	}
	f.Reload()
	eventually(t, 5*time.Minute, "200 contexts synced", allSynced(200))

	// Context i (from 1) is on apiserver (i-1) mod 3: each must hold what kubectl lists there.
	for ci, c := range fleet.Clusters {
		want := map[string]int{}
		for _, spec := range clusters.DefaultResources() {
			want[spec.Name] = kubectlCount(t, c.Name, spec.Name)
		}
		for i := ci + 1; i <= 200; i += len(fleet.Clusters) {
			name := fmt.Sprintf("ctx-%04d", i)
			s := f.Cluster(name).Status()
			got := map[string]int{}
			for _, r := range s.Resources {
				got[r.Resource] += r.Objects
			}
			for res, n := range want {
				if got[res] != n {
					t.Errorf("%s (on %s) holds %d %s, kubectl lists %d", name, c.Name, got[res], res, n)
				}
			}
		}
	}
	heap200 := liveHeap()

	if err := fleet.WriteManyContexts(path, 100); err != nil {
		t.Fatal(err)
	}
	f.Reload()
	eventually(t, 5*time.Minute, "back to 100 contexts", allSynced(100)) // as long as the other waits: a busy machine (make test runs packages side by side) delays probes
	// The removed clusters leave the fleet at once and stop within seconds; the index
	// keeps their last events (their objects' DELETED events) for a minute for watches to
	// resume through (aggregator.Options.RemovedRetention), then frees them.
	// Polled once a second: each check collects garbage twice.
	var heapAfter float64
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 3*time.Minute, true, func(context.Context) (bool, error) {
		heapAfter = liveHeap()
		return heapAfter <= 1.2*heap100, nil
	})
	if err != nil {
		t.Errorf("removing 100 contexts: after 3 minutes the live heap is %.1f MiB, more than 20%% over the 100-context %.1f MiB (%d goroutines, %d with 100 contexts)",
			heapAfter/(1<<20), heap100/(1<<20), runtime.NumGoroutine(), goroutines100)
	}
	t.Logf("live heap: 100 contexts %.1f MiB, 200 contexts %.1f MiB, back to 100 %.1f MiB",
		heap100/(1<<20), heap200/(1<<20), heapAfter/(1<<20))
}
