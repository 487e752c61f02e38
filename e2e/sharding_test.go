package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/sharding"
	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// shardContexts is how many kubeconfig contexts the sharding tests spread over replicas.
const shardContexts = 30

// shardLease is the replicas' lease duration in the tests: a killed replica's clusters
// move to the survivors within it (plus a renewal and a sync).
const shardLease = 4 * time.Second

type shardReplica struct {
	id, url string
	kill    func()
}

// clustersView is a replica's /api/v1/clusters.
type clustersView struct {
	Clusters []clusters.ClusterStatus `json:"clusters"`
	Sharding *sharding.Status         `json:"sharding"`
}

func (r shardReplica) view(t testing.TB) clustersView {
	t.Helper()
	resp, err := http.Get(r.url + "/api/v1/clusters")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v clustersView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// startShards runs n replicas of one sharding group over shardContexts contexts, with
// their Leases in the fleet's first cluster.
func startShards(t *testing.T, group string, n, replicas int) []shardReplica {
	d := startDaemon(t) // builds the binary, seeds the fleet
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "many.kubeconfig")
	if err := fleet.WriteManyContexts(kubeconfig, shardContexts); err != nil {
		t.Fatal(err)
	}
	var out []shardReplica
	for i := range n {
		id := fmt.Sprintf("%s-%d", group, i)
		addr := freeAddr(t)
		cfg := filepath.Join(dir, id+".yaml")
		body := fmt.Sprintf(`kubeconfig: [%s]
resources: [{name: namespaces}, {name: configmaps}]
sharding:
  homeContext: %s
  homeKubeconfig: %s
  namespace: default
  group: %s
  identity: %s
  advertiseURL: http://%s
  leaseDuration: %s
  replicas: %d
log: {level: debug}
`, kubeconfig, fleet.Clusters[0].Name, fleet.Kubeconfig, group, id, addr, shardLease, replicas)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		out = append(out, shardReplica{id: id, url: "http://" + addr, kill: daemonAt(t, d.bin, addr, cfg)})
	}
	return out
}

// synced are the clusters a replica caches and reports Synced, sorted.
func (v clustersView) synced() []string {
	var out []string
	for _, c := range v.Clusters {
		if c.Phase == clusters.PhaseSynced {
			out = append(out, c.Name)
		}
	}
	sort.Strings(out)
	return out
}

// coverage counts, for each of the test's contexts, how many of the replicas cache it
// Synced; wrong lists what is not covered exactly want times.
func coverage(t *testing.T, rs []shardReplica, want int) (wrong []string) {
	count := map[string]int{}
	for _, r := range rs {
		for _, c := range r.view(t).synced() {
			count[c]++
		}
	}
	for i := 1; i <= shardContexts; i++ {
		name := fmt.Sprintf("ctx-%04d", i)
		if count[name] != want {
			wrong = append(wrong, fmt.Sprintf("%s:%d", name, count[name]))
		}
	}
	return wrong
}

func TestShardedReplicasSplitTheFleet(t *testing.T) {
	for _, replicas := range []int{1, 2} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			group := fmt.Sprintf("split%d", replicas)
			rs := startShards(t, group, 3, replicas)
			testfleet.Eventually(t, 60*time.Second, "every context cached by exactly the configured replicas", func() (bool, string) {
				wrong := coverage(t, rs, replicas)
				return len(wrong) == 0, strings.Join(wrong, " ")
			})
			// Each replica caches exactly what the shared assignment gives it, and every
			// replica computes the same assignment.
			first := rs[0].view(t).Sharding
			if first == nil || len(first.Members) != 3 || len(first.Owners) != shardContexts {
				t.Fatalf("sharding block %+v: want 3 members and %d clusters", first, shardContexts)
			}
			for _, r := range rs {
				v := r.view(t)
				if fmt.Sprint(v.Sharding.Owners) != fmt.Sprint(first.Owners) {
					t.Errorf("%s and %s disagree on owners", r.id, rs[0].id)
				}
				var mine []string
				for c, owners := range v.Sharding.Owners {
					for _, o := range owners {
						if o == r.id {
							mine = append(mine, c)
						}
					}
				}
				sort.Strings(mine)
				if got := v.synced(); fmt.Sprint(got) != fmt.Sprint(mine) {
					t.Errorf("%s caches %v, its assignment is %v", r.id, got, mine)
				}
				if len(mine) == 0 {
					t.Errorf("%s owns nothing of %d contexts", r.id, shardContexts)
				}
			}

			// kill -9 one replica: its clusters come back on the survivors within the
			// lease duration (plus a renewal round and a sync).
			rs[1].kill()
			killed := time.Now()
			survivors := []shardReplica{rs[0], rs[2]}
			if replicas == 2 {
				// Every context still has a copy on a survivor at once.
				for _, c := range coverageLess(t, survivors, 1) {
					t.Errorf("right after the kill, %s has no Synced copy on a survivor", c)
				}
			}
			testfleet.Eventually(t, shardLease+5*time.Second, "the survivors cache every context again", func() (bool, string) {
				wrong := coverage(t, survivors, replicas)
				return len(wrong) == 0, strings.Join(wrong, " ")
			})
			t.Logf("replicas=%d: the killed replica's clusters were Synced on the survivors %s after the kill", replicas, time.Since(killed).Round(100*time.Millisecond))
		})
	}
}

// coverageLess lists the contexts that fewer than n replicas cache Synced.
func coverageLess(t *testing.T, rs []shardReplica, n int) []string {
	count := map[string]int{}
	for _, r := range rs {
		for _, c := range r.view(t).synced() {
			count[c]++
		}
	}
	var out []string
	for i := 1; i <= shardContexts; i++ {
		if name := fmt.Sprintf("ctx-%04d", i); count[name] < n {
			out = append(out, name)
		}
	}
	return out
}
