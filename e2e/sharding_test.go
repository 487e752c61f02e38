package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/cert"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/auth"
	"github.com/fleetcache/fleetcache/internal/sharding"
	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// shardContexts is how many kubeconfig contexts the sharding tests spread over replicas.
const shardContexts = 30

// shardLease is the replicas' lease duration in the tests: a killed replica's clusters
// move to the survivors within it (plus a renewal and a sync). Shorter leases flap on a
// loaded 2-core machine (a renewal late by a lease duration drops a live replica).
const shardLease = 8 * time.Second

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
// their Leases in the fleet's first cluster; more starts one more.
func startShards(t testing.TB, group string, n, replicas int) (rs []shardReplica, more func() shardReplica, sf *shardFleet) {
	sf = newShardFleet(t, shardContexts, "[{name: namespaces}, {name: configmaps}]")
	more = func() shardReplica { return sf.start(t, group, replicas) }
	for range n {
		rs = append(rs, more())
	}
	return rs, more, sf
}

// shardFleet starts fleetcache processes over one many-contexts kubeconfig.
type shardFleet struct {
	bin, dir, kubeconfig, resources string
	started                         int
	extra                           string // more configuration for every process
}

func newShardFleet(t testing.TB, contexts int, resources string) *shardFleet {
	d := startDaemon(t) // builds the binary, seeds the fleet
	sf := &shardFleet{bin: d.bin, dir: t.TempDir(), resources: resources}
	sf.kubeconfig = filepath.Join(sf.dir, "many.kubeconfig")
	if err := fleet.WriteManyContexts(sf.kubeconfig, contexts); err != nil {
		t.Fatal(err)
	}
	return sf
}

// start runs one replica of group (replicas copies of each cluster), or with group ""
// a daemon without sharding that caches every context.
func (sf *shardFleet) start(t testing.TB, group string, replicas int) shardReplica {
	id := fmt.Sprintf("%s-%d", group, sf.started)
	if group == "" {
		id = fmt.Sprintf("single-%d", sf.started)
	}
	sf.started++
	addr := freeAddr(t)
	cfg := filepath.Join(sf.dir, id+".yaml")
	body := fmt.Sprintf("kubeconfig: [%s]\nresources: %s\nlog: {level: debug}\n%s", sf.kubeconfig, sf.resources, sf.extra)
	if group != "" {
		body += fmt.Sprintf(`sharding:
  homeContext: %s
  homeKubeconfig: %s
  namespace: default
  group: %s
  identity: %s
  advertiseURL: http://%s
  leaseDuration: %s
  replicas: %d
`, fleet.Clusters[0].Name, fleet.Kubeconfig, group, id, addr, shardLease, replicas)
	}
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return shardReplica{id: id, url: "http://" + addr, kill: daemonAt(t, sf.bin, addr, cfg)}
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
func coverage(t testing.TB, rs []shardReplica, want int) (wrong []string) {
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
			rs, more, sf := startShards(t, group, 3, replicas)
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

			// The shard metrics say the same.
			for _, r := range rs {
				resp, err := http.Get(r.url + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				m := string(body)
				owned := len(r.view(t).synced())
				for _, want := range []string{"fleetcache_shard_members 3\n", fmt.Sprintf("fleetcache_shard_owned_clusters %d\n", owned)} {
					if !strings.Contains(m, want) {
						t.Errorf("%s /metrics lacks %q", r.id, want)
					}
				}
				// The handover is timed by a 250ms poll after the clusters synced.
				testfleet.Eventually(t, 5*time.Second, r.id+" observed its handover", func() (bool, string) {
					resp, err := http.Get(r.url + "/metrics")
					if err != nil {
						return false, err.Error()
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					m := string(body)
					return strings.Contains(m, "fleetcache_shard_handover_seconds_count") && !strings.Contains(m, "fleetcache_shard_handover_seconds_count 0\n"), "no handover observed"
				})
			}

			// Answers through each replica equal kubectl's, per apiserver times its contexts.
			truth := shardTruth(t, "configmaps", "-A", "-l", testfleet.SeedLabel)
			t.Logf("kubectl: %d seeded configmaps over %d contexts", len(truth), shardContexts)
			for _, r := range rs {
				got := pageAll(t, r, url.Values{"resource": {"configmaps"}, "labelSelector": {testfleet.SeedLabel}, "limit": {"7"}})
				if fmt.Sprint(got) != fmt.Sprint(truth) {
					t.Errorf("%s: paged list of %d configmaps, kubectl says %d\n got  %v\n want %v", r.id, len(got), len(truth), got, truth)
				}
				if rows := pageRows(t, r, url.Values{"resource": {"configmaps"}, "labelSelector": {testfleet.SeedLabel}, "limit": {"13"}, "format": {"table"}}); fmt.Sprint(rows) != fmt.Sprint(truth) {
					t.Errorf("%s: paged table of %d rows, kubectl says %d", r.id, len(rows), len(truth))
				}
				counts := shardCount(t, r, url.Values{"resource": {"configmaps"}, "labelSelector": {testfleet.SeedLabel}, "groupBy": {"cluster"}})
				want := map[string]int{}
				for _, k := range truth {
					c, _, _ := strings.Cut(k, "/")
					want[c]++
				}
				if fmt.Sprint(counts) != fmt.Sprint(want) {
					t.Errorf("%s: counts %v, kubectl says %v", r.id, counts, want)
				}
				// A single get of an object in a cluster another replica caches.
				for _, k := range []string{truth[0], truth[len(truth)-1]} {
					parts := strings.SplitN(k, "/", 3)
					resp, err := http.Get(r.url + "/api/v1/objects/" + parts[0] + "/configmaps/" + parts[1] + "/" + parts[2])
					if err != nil {
						t.Fatal(err)
					}
					var item struct {
						Cluster string `json:"cluster"`
						Object  struct {
							Metadata struct{ Name string } `json:"metadata"`
						} `json:"object"`
					}
					_ = json.NewDecoder(resp.Body).Decode(&item)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK || item.Cluster != parts[0] || item.Object.Metadata.Name != parts[2] {
						t.Errorf("%s: get %s: HTTP %d, %+v", r.id, k, resp.StatusCode, item)
					}
				}
			}

			if replicas == 1 {
				// A fourth replica takes about a quarter of the clusters, all from the others,
				// and nothing else moves.
				rs = append(rs, more())
				testfleet.Eventually(t, 30*time.Second, "four replicas split the fleet", func() (bool, string) {
					wrong := coverage(t, rs, replicas)
					v := rs[0].view(t)
					return len(wrong) == 0 && len(v.Sharding.Members) == 4, fmt.Sprintf("%d members, %v", len(v.Sharding.Members), wrong)
				})
				after := rs[0].view(t).Sharding.Owners
				moved := 0
				for c, owners := range after {
					if owners[0] != first.Owners[c][0] {
						moved++
						if owners[0] != rs[3].id {
							t.Errorf("%s moved from %s to %s, not to the new replica", c, first.Owners[c][0], owners[0])
						}
					}
				}
				t.Logf("adding a fourth replica moved %d of %d clusters", moved, shardContexts)
				if limit := shardContexts * 35 / 100; moved > limit || moved == 0 {
					t.Errorf("adding a fourth replica moved %d of %d clusters, want 1..%d (1/4 + 10%%)", moved, shardContexts, limit)
				}
				first = rs[0].view(t).Sharding
			}

			// kubectl through a replica: a cluster another replica caches is passed to it;
			// /fleet answers with this replica's clusters and a Warning naming the others.
			k := newFleetKubectl(t, &daemon{url: rs[0].url, bin: startDaemon(t).bin})
			var remote string
			for c, owners := range first.Owners {
				if owners[0] != rs[0].id && (remote == "" || c < remote) {
					remote = c
				}
			}
			out, stderr, err := k.run("--server", rs[0].url+"/clusters/"+remote, "get", "configmaps", "-A", "-l", testfleet.SeedLabel, "-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}`)
			if err != nil {
				t.Fatalf("kubectl through %s for %s: %v\n%s", rs[0].id, remote, err, stderr)
			}
			var want []string
			for _, k := range truth {
				if strings.HasPrefix(k, remote+"/") {
					want = append(want, strings.TrimPrefix(k, remote+"/"))
				}
			}
			if got := sorted(out); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("kubectl through %s for %s (cached by %v): %v, want %v", rs[0].id, remote, first.Owners[remote], got, want)
			}
			if _, stderr, err := k.run("--server", rs[0].url+"/fleet", "api-resources"); err != nil || strings.Contains(stderr, "partial answer") {
				t.Errorf("kubectl api-resources on /fleet through %s: %v, stderr %q, want discovery without warnings", rs[0].id, err, stderr)
			}
			fr := checkFleetThroughReplica(t, k, rs[0], truth)

			// A routed watch resumes from its cursor, through another replica: exactly the
			// changes made after it, from every context.
			rq := url.Values{"resource": {"configmaps"}, "labelSelector": {"shard-watch=yes"}}
			rw1 := startRoutedWatch(t, rs[0], rq)
			shardCM(t, 0, "resume-1", "create", "v1")
			rw1.waitFor(t, "resume-1 added", func(evs map[string][]string) bool { return countSeq(evs, "resume-1", "ADDED") == shardContexts/3 })
			rw1.mu.Lock()
			resumeFrom := rw1.cursor
			rw1.mu.Unlock()
			rw1.stop()
			if !strings.HasPrefix(resumeFrom, "sharded.") {
				t.Fatalf("routed watch through %s: cursor %q, want the router's", rs[0].id, resumeFrom)
			}
			shardCM(t, 0, "resume-1", "update", "v2")
			shardCM(t, 1, "resume-2", "create", "v1")
			rq.Set("cursor", resumeFrom)
			rw2 := startRoutedWatch(t, rs[2], rq)
			rw2.waitFor(t, "the changes after the cursor", func(evs map[string][]string) bool {
				return countSeq(evs, "resume-1", "MODIFIED") == shardContexts/3 && countSeq(evs, "resume-2", "ADDED") == shardContexts/3
			})
			shardCM(t, 0, "resume-1", "delete", "")
			rw2.waitFor(t, "resume-1 deleted", func(evs map[string][]string) bool {
				return countSeq(evs, "resume-1", "MODIFIED DELETED") == shardContexts/3
			})
			if evs := rw2.snapshot(); len(evs) != 2*shardContexts/3 {
				t.Errorf("resumed watch through %s: events for %d objects, want %d: %v", rs[2].id, len(evs), 2*shardContexts/3, evs)
			}
			shardCM(t, 1, "resume-2", "delete", "")
			rw2.waitFor(t, "resume-2 deleted", func(evs map[string][]string) bool {
				return countSeq(evs, "resume-2", "ADDED DELETED") == shardContexts/3
			})
			rw2.stop()

			// kill -9 one replica: its clusters come back on the survivors within the
			// lease duration (plus a renewal round and a sync).
			var rw *routedWatch
			if replicas == 1 {
				rw = startRoutedWatch(t, rs[0], url.Values{"resource": {"configmaps"}, "labelSelector": {"shard-watch=yes"}})
				shardCM(t, 0, "w1", "create", "v1")
				shardCM(t, 1, "w2", "create", "v1")
				rw.waitFor(t, "w1 and w2 added everywhere", func(evs map[string][]string) bool {
					return countSeq(evs, "w1", "ADDED") == shardContexts/3 && countSeq(evs, "w2", "ADDED") == shardContexts/3
				})
			}
			deadOwns := map[string]bool{}
			for c, owners := range first.Owners {
				if owners[0] == rs[1].id && replicas == 1 {
					deadOwns[c] = true
				}
			}
			rs[1].kill()
			killed := time.Now()
			if rw != nil {
				// Changes while the dead replica's clusters have no owner.
				shardCM(t, 0, "w1", "update", "v2")
				shardCM(t, 1, "w2", "delete", "")
				shardCM(t, 2, "w3", "create", "v1")
			}
			survivors := append([]shardReplica{rs[0]}, rs[2:]...)
			// Until the dead replica's Lease expires its clusters are nobody's: answers
			// through the survivors say so for exactly those clusters (with two copies of
			// each cluster, the other copy answers and nothing is partial).
			for _, r := range survivors {
				page := listPageOf(t, r, url.Values{"resource": {"configmaps"}, "labelSelector": {testfleet.SeedLabel}, "limit": {"5000"}})
				notSynced := map[string]bool{}
				for _, f := range page.Clusters {
					if f.Phase != clusters.PhaseSynced || (f.ResourcePhase != "" && f.ResourcePhase != clusters.PhaseSynced) {
						notSynced[f.Cluster] = true
					}
				}
				t.Logf("%s %s after the kill: partial=%v, not synced %v (the dead replica owned %v)", r.id, time.Since(killed).Round(time.Millisecond), page.Partial, keys(notSynced), keys(deadOwns))
				if time.Since(killed) < shardLease-time.Second { // the claim is about the window before expiry
					if fmt.Sprint(notSynced) != fmt.Sprint(deadOwns) || page.Partial != (len(deadOwns) > 0) {
						t.Errorf("%s right after the kill: partial=%v, not synced %v; want exactly the dead replica's %v", r.id, page.Partial, keys(notSynced), keys(deadOwns))
					}
				}
				if replicas == 2 && page.Partial {
					t.Errorf("%s: partial with two copies of every cluster: %v", r.id, keys(notSynced))
				}
				// kubectl on /fleet says the same in a Warning.
				_, stderr, err := k.run("--server", r.url+"/fleet", "get", "configmaps", "-A", "-l", testfleet.SeedLabel)
				if err != nil {
					t.Errorf("kubectl on /fleet through %s after the kill: %v, %s", r.id, err, stderr)
				}
				if time.Since(killed) < shardLease-time.Second {
					dead := keys(deadOwns)
					switch {
					case len(dead) == 0 && strings.Contains(stderr, "partial answer"):
						t.Errorf("kubectl on /fleet through %s after the kill: %q, want no warning (no cluster lost its copies)", r.id, stderr)
					case len(dead) > 0:
						for _, c := range dead {
							if !strings.Contains(stderr, "partial answer: no replica answered for ") || !strings.Contains(stderr, c) {
								t.Errorf("kubectl on /fleet through %s after the kill: %q, want a Warning naming %v", r.id, stderr, dead)
								break
							}
						}
					}
				}
			}
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
			if replicas == 1 {
				// The cursor from before the kill follows the dead replica for some
				// clusters: nobody can resume those, and the router says so.
				resp, err := http.Get(rs[0].url + "/api/v1/watch?" + url.Values{"resource": {"configmaps"}, "cursor": {resumeFrom}}.Encode())
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusGone || !strings.Contains(string(body), rs[1].id) {
					t.Errorf("resuming a cursor that follows the dead replica: HTTP %d %s, want 410 naming %s", resp.StatusCode, body, rs[1].id)
				}
			}
			// The reflector on /fleet through a survivor follows the move (its watch ends
			// with 410 when the owners change; it lists again) and sees what changes next.
			fr.createAndWait(t, "fleet-after")
			if rw != nil {
				// The routed watch saw every change of every context exactly once, those
				// of the moved contexts as the difference when they were taken over.
				rw.waitFor(t, "every change through the routed watch", func(evs map[string][]string) bool {
					return countSeq(evs, "w1", "ADDED MODIFIED") == shardContexts/3 && countSeq(evs, "w2", "ADDED DELETED") == shardContexts/3 &&
						countSeq(evs, "w3", "ADDED") == shardContexts/3
				})
				shardCM(t, 0, "w1", "delete", "")
				rw.waitFor(t, "w1 deleted everywhere", func(evs map[string][]string) bool {
					return countSeq(evs, "w1", "ADDED MODIFIED DELETED") == shardContexts/3
				})
				for key, seq := range rw.snapshot() {
					if want := map[string]bool{"ADDED MODIFIED DELETED": true, "ADDED DELETED": true, "ADDED": true}; !want[strings.Join(seq, " ")] {
						t.Errorf("routed watch: %s got %v", key, seq)
					}
				}
				shardCM(t, 2, "w3", "delete", "")
			}
			// Removing a context from the kubeconfig moves no other.
			before := rs[0].view(t).Sharding.Owners
			if err := fleet.WriteManyContexts(sf.kubeconfig, shardContexts-1); err != nil {
				t.Fatal(err)
			}
			gone := fmt.Sprintf("ctx-%04d", shardContexts)
			testfleet.Eventually(t, 20*time.Second, gone+" dropped by every survivor", func() (bool, string) {
				for _, r := range survivors {
					v := r.view(t)
					if _, ok := v.Sharding.Owners[gone]; ok || slices.Contains(v.synced(), gone) {
						return false, r.id + " still has it"
					}
				}
				return true, ""
			})
			for _, r := range survivors {
				for c, owners := range r.view(t).Sharding.Owners {
					if fmt.Sprint(owners) != fmt.Sprint(before[c]) {
						t.Errorf("%s: removing %s moved %s from %v to %v", r.id, gone, c, before[c], owners)
					}
				}
			}
			truth = truth[:0:0]
			for _, k := range shardTruth(t, "configmaps", "-A", "-l", testfleet.SeedLabel) {
				if !strings.HasPrefix(k, gone+"/") {
					truth = append(truth, k)
				}
			}
			for _, r := range survivors {
				testfleet.Eventually(t, 10*time.Second, r.id+" answers whole again", func() (bool, string) {
					got := pageAll(t, r, url.Values{"resource": {"configmaps"}, "labelSelector": {testfleet.SeedLabel}, "limit": {"11"}})
					return fmt.Sprint(got) == fmt.Sprint(truth), fmt.Sprintf("%d of %d", len(got), len(truth))
				})
			}
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

// shardTruth is kubectl's answer per apiserver, repeated for each many-contexts context
// that points at it: "ctx/namespace/name", sorted.
func shardTruth(t *testing.T, resource string, args ...string) []string {
	per := map[string][]string{}
	for _, k := range kubectlSet(t, resource, args...) {
		c, rest, _ := strings.Cut(k, "/")
		per[c] = append(per[c], rest)
	}
	var out []string
	for i := 1; i <= shardContexts; i++ {
		c := fleet.Clusters[(i-1)%len(fleet.Clusters)].Name
		for _, rest := range per[c] {
			out = append(out, fmt.Sprintf("ctx-%04d/%s", i, rest))
		}
	}
	sort.Strings(out)
	return out
}

type shardPage struct {
	Clusters []aggregator.Freshness `json:"clusters"`
	Partial  bool                   `json:"partial"`
	Items    []struct {
		Cluster string `json:"cluster"`
		Object  struct {
			Metadata struct{ Name, Namespace string } `json:"metadata"`
		} `json:"object"`
	} `json:"items"`
	Continue string `json:"continue"`
}

func listPageOf(t testing.TB, r shardReplica, q url.Values) shardPage {
	t.Helper()
	resp, err := http.Get(r.url + "/api/v1/objects?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: list %s: HTTP %d %s", r.id, q.Encode(), resp.StatusCode, body)
	}
	var p shardPage
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

// pageAll follows continue tokens through one replica and returns every item's
// "cluster/namespace/name" in the order received.
func pageAll(t testing.TB, r shardReplica, q url.Values) []string {
	t.Helper()
	var out []string
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("%s: more than 1000 pages", r.id)
		}
		p := listPageOf(t, r, q)
		for _, it := range p.Items {
			out = append(out, it.Cluster+"/"+it.Object.Metadata.Namespace+"/"+it.Object.Metadata.Name)
		}
		if p.Continue == "" {
			return out
		}
		q.Set("continue", p.Continue)
	}
}

func shardCount(t *testing.T, r shardReplica, q url.Values) map[string]int {
	t.Helper()
	resp, err := http.Get(r.url + "/api/v1/count?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c struct {
		Groups []aggregator.Group `json:"groups"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, g := range c.Groups {
		out[g.Values[0]] = g.Count
	}
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// routedWatch collects a /api/v1/watch stream's events per "context/name".
type routedWatch struct {
	mu     sync.Mutex
	events map[string][]string
	cursor string // the last one sent
	stop   context.CancelFunc
}

func startRoutedWatch(t *testing.T, r shardReplica, q url.Values) *routedWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/api/v1/watch?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch through %s: HTTP %d", r.id, resp.StatusCode)
	}
	rw := &routedWatch{events: map[string][]string{}, stop: cancel}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var l struct {
				Type    string `json:"type"`
				Cluster string `json:"cluster"`
				Cursor  string `json:"cursor"`
				Object  struct {
					Metadata struct{ Name string } `json:"metadata"`
				} `json:"object"`
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			rw.mu.Lock()
			if l.Cursor != "" {
				rw.cursor = l.Cursor
			}
			rw.mu.Unlock()
			if l.Type == "BOOKMARK" {
				continue
			}
			rw.mu.Lock()
			k := l.Cluster + "/" + l.Object.Metadata.Name
			rw.events[k] = append(rw.events[k], l.Type)
			rw.mu.Unlock()
		}
	}()
	return rw
}

func (rw *routedWatch) snapshot() map[string][]string {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	out := map[string][]string{}
	for k, v := range rw.events {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func (rw *routedWatch) waitFor(t *testing.T, what string, cond func(map[string][]string) bool) {
	t.Helper()
	testfleet.Eventually(t, 30*time.Second, what, func() (bool, string) {
		evs := rw.snapshot()
		return cond(evs), fmt.Sprint(evs)
	})
}

// countSeq counts the contexts whose events for name are exactly seq.
func countSeq(evs map[string][]string, name, seq string) int {
	n := 0
	for k, v := range evs {
		if strings.HasSuffix(k, "/"+name) && strings.Join(v, " ") == seq {
			n++
		}
	}
	return n
}

// shardCM creates, updates or deletes a labelled ConfigMap in the default namespace of the
// fleet's cluster i (and so of every context pointing at it).
func shardCM(t *testing.T, i int, name, verb, value string) {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(fleet.Clusters[i].AdminConfig())
	ctx := context.Background()
	cms := cs.CoreV1().ConfigMaps("default")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"shard-watch": "yes"}}, Data: map[string]string{"v": value}}
	var err error
	switch verb {
	case "create":
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
	case "update":
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	case "delete":
		err = cms.Delete(ctx, name, metav1.DeleteOptions{})
	}
	if err != nil {
		t.Fatalf("%s configmap %s in %s: %v", verb, name, fleet.Clusters[i].Name, err)
	}
}

// pageRows follows a table's pages through one replica: "cluster/namespace/name" per row.
func pageRows(t testing.TB, r shardReplica, q url.Values) []string {
	t.Helper()
	var out []string
	for pages := 0; pages < 1000; pages++ {
		resp, err := http.Get(r.url + "/api/v1/objects?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			Table struct {
				Rows []struct {
					Cells  []any `json:"cells"`
					Object struct {
						Metadata struct{ Name, Namespace string } `json:"metadata"`
					} `json:"object"`
				} `json:"rows"`
			} `json:"table"`
			Continue string `json:"continue"`
		}
		err = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: table page: HTTP %d %v", r.id, resp.StatusCode, err)
		}
		for _, row := range p.Table.Rows {
			out = append(out, fmt.Sprint(row.Cells[0])+"/"+row.Object.Metadata.Namespace+"/"+row.Object.Metadata.Name)
		}
		if p.Continue == "" {
			return out
		}
		q.Set("continue", p.Continue)
	}
	t.Fatalf("%s: more than 1000 pages", r.id)
	return nil
}

// TestShardedWatchOnlyTellsUnknownFromElsewhere: a replica asked (as a router asks it,
// local=true&only=...) to watch a cluster another replica caches answers 503, which the
// router retries; one asked for a cluster the fleet's configuration does not have answers
// 400, which is definitive. Sent as curl sends them; a watch routed to the other replica
// is answered.
func TestShardedWatchOnlyTellsUnknownFromElsewhere(t *testing.T) {
	rs, _, _ := startShards(t, "only", 2, 1)
	testfleet.Eventually(t, 60*time.Second, "every context cached by one replica", func() (bool, string) {
		wrong := coverage(t, rs, 1)
		return len(wrong) == 0, strings.Join(wrong, " ")
	})
	a := rs[0]
	var mine, theirs string
	owners := a.view(t).Sharding.Owners
	for _, c := range slices.Sorted(maps.Keys(owners)) {
		switch {
		case owners[c][0] == a.id && mine == "":
			mine = c
		case owners[c][0] != a.id && theirs == "":
			theirs = c
		}
	}
	if mine == "" || theirs == "" {
		t.Fatalf("%s owns %q, the other replica %q: %v", a.id, mine, theirs, owners)
	}
	for _, tc := range []struct {
		only   string
		code   int
		reason string
		words  []string
	}{
		{theirs, http.StatusServiceUnavailable, "ServiceUnavailable", []string{theirs}},
		{"nowhere", http.StatusBadRequest, "BadRequest", []string{`"only"`, `"nowhere"`}},
		{mine + ",nowhere", http.StatusBadRequest, "BadRequest", []string{`"only"`, `"nowhere"`}},
	} {
		code, body := sendRaw(t, a.url, "/api/v1/watch?local=true&resource=configmaps&only="+tc.only)
		var e struct {
			Code            int
			Reason, Message string
		}
		_ = json.Unmarshal([]byte(body), &e)
		if code != tc.code || e.Reason != tc.reason {
			t.Errorf("only=%s through %s: %d %s, want %d %s", tc.only, a.id, code, body, tc.code, tc.reason)
			continue
		}
		for _, w := range tc.words {
			if !strings.Contains(e.Message, w) {
				t.Errorf("only=%s: message %q does not say %s", tc.only, e.Message, w)
			}
		}
	}
	// What a replica caches it watches; the other's clusters through the router.
	for _, q := range []url.Values{
		{"local": {"true"}, "resource": {"configmaps"}, "only": {mine}},
		{"resource": {"configmaps"}, "cluster": {theirs}},
	} {
		ch, stop := openWatch(t, &daemon{url: a.url}, q)
		select {
		case l, ok := <-ch:
			if !ok || l.Type != "BOOKMARK" {
				t.Errorf("watch %s through %s: first line %+v (open %v), want a BOOKMARK", q.Encode(), a.id, l, ok)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("watch %s through %s: no line within 30s", q.Encode(), a.id)
		}
		stop()
	}
}

// TestShardedAnswersKeepTheCallersScope: a replica asks its peers with the caller's own
// token, so a restricted user sees through any replica exactly what it may see, and no
// replica widens it.
func TestShardedAnswersKeepTheCallersScope(t *testing.T) {
	sf := newShardFleet(t, 12, "[{name: configmaps}]")
	admin, team := "admin-token-0123456789", "team-token-0123456789"
	tokens := filepath.Join(sf.dir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte(fmt.Sprintf("users:\n  - {name: admin, token: %s}\n  - {name: team, token: %s, clusters: [\"ctx-000[1-5]\"]}\n", admin, team)), 0o600); err != nil {
		t.Fatal(err)
	}
	sf.extra = "auth: {tokenFile: " + tokens + "}\n"
	rs := []shardReplica{sf.start(t, "scope", 1), sf.start(t, "scope", 1)}
	get := func(r shardReplica, token, path string, q url.Values, v any) int {
		return getAs(t, r.url, token, path, q, v)
	}
	q := url.Values{"resource": {"configmaps"}, "labelSelector": {testfleet.SeedLabel}, "limit": {"5000"}}
	testfleet.Eventually(t, 60*time.Second, "both replicas answer for all 12 contexts", func() (bool, string) {
		var p shardPage
		code := get(rs[0], admin, "/api/v1/objects", q, &p)
		return code == http.StatusOK && !p.Partial && len(p.Clusters) == 12, fmt.Sprintf("HTTP %d, partial %v, %d clusters", code, p.Partial, len(p.Clusters))
	})
	if code := get(rs[0], "", "/api/v1/objects", q, nil); code != http.StatusUnauthorized {
		t.Errorf("no token: HTTP %d, want 401", code)
	}
	for _, r := range rs {
		var p shardPage
		if code := get(r, team, "/api/v1/objects", q, &p); code != http.StatusOK {
			t.Fatalf("%s: team list: HTTP %d", r.id, code)
		}
		seen := map[string]bool{}
		for _, it := range p.Items {
			seen[it.Cluster] = true
		}
		for _, f := range p.Clusters {
			seen[f.Cluster] = true
		}
		if fmt.Sprint(keys(seen)) != "[ctx-0001 ctx-0002 ctx-0003 ctx-0004 ctx-0005]" || len(p.Items) == 0 {
			t.Errorf("%s: the team sees clusters %v (%d items), want ctx-0001..ctx-0005", r.id, keys(seen), len(p.Items))
		}
		var c struct {
			Total    int                    `json:"total"`
			Clusters []aggregator.Freshness `json:"clusters"`
		}
		get(r, team, "/api/v1/count", url.Values{"resource": {"configmaps"}, "labelSelector": {testfleet.SeedLabel}}, &c)
		if c.Total != len(p.Items) || len(c.Clusters) != 5 {
			t.Errorf("%s: the team counts %d in %d clusters, lists %d in 5", r.id, c.Total, len(c.Clusters), len(p.Items))
		}
		// The Kubernetes API on /fleet, merged from both replicas, is scoped the same.
		var kl struct {
			Items []struct {
				Metadata struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			} `json:"items"`
		}
		if code := get(r, team, "/fleet/api/v1/configmaps", url.Values{"labelSelector": {testfleet.SeedLabel}}, &kl); code != http.StatusOK {
			t.Fatalf("%s: team /fleet list: HTTP %d", r.id, code)
		}
		kseen := map[string]bool{}
		for _, it := range kl.Items {
			kseen[it.Metadata.Annotations["fleetcache.io/cluster"]] = true
		}
		if fmt.Sprint(keys(kseen)) != "[ctx-0001 ctx-0002 ctx-0003 ctx-0004 ctx-0005]" || len(kl.Items) != len(p.Items) {
			t.Errorf("%s: the team's /fleet list: %d items from %v, want the %d from ctx-0001..ctx-0005", r.id, len(kl.Items), keys(kseen), len(p.Items))
		}
		var v clustersView
		get(r, team, "/api/v1/clusters", nil, &v)
		if v.Sharding == nil || len(v.Sharding.Owners) != 5 {
			t.Errorf("%s: the team's sharding block %+v, want 5 clusters", r.id, v.Sharding)
		}
	}
	// A page begun through one replica continues through the other (as behind a Service):
	// the replicas sign continue tokens with a key derived from their group key. Failed
	// before: "signature does not match".
	pq := url.Values{"resource": {"configmaps"}, "labelSelector": {testfleet.SeedLabel}, "limit": {"7"}}
	var one, across []string
	for i, rsOf := range [][]shardReplica{{rs[0]}, {rs[0], rs[1]}} {
		q := url.Values{}
		for k, v := range pq {
			q[k] = v
		}
		for page := 0; ; page++ {
			if page > 1000 {
				t.Fatal("more than 1000 pages")
			}
			r := rsOf[page%len(rsOf)]
			var p shardPage
			if code := get(r, team, "/api/v1/objects", q, &p); code != http.StatusOK {
				t.Fatalf("page %d through %s: HTTP %d", page, r.id, code)
			}
			for _, it := range p.Items {
				key := it.Cluster + "/" + it.Object.Metadata.Namespace + "/" + it.Object.Metadata.Name
				if i == 0 {
					one = append(one, key)
				} else {
					across = append(across, key)
				}
			}
			if p.Continue == "" {
				break
			}
			q.Set("continue", p.Continue)
		}
	}
	if len(one) < 8 || fmt.Sprint(across) != fmt.Sprint(one) {
		t.Errorf("paged across both replicas: %d items, through one: %d (they must be the same, in more than one page)", len(across), len(one))
	}
}

// checkFleetThroughReplica reads the Kubernetes API on /fleet through one replica with
// kubectl and a client-go reflector: every cluster's objects, whichever replica caches
// them, equal kubectl's ground truth, and changes in clusters other replicas cache arrive.
func checkFleetThroughReplica(t *testing.T, k *fleetKubectl, r shardReplica, truth []string) *fleetReflector {
	t.Helper()
	server := r.url + "/fleet"
	out, stderr, err := k.run("--server", server, "get", "configmaps", "-A", "-l", testfleet.SeedLabel, "-o",
		`jsonpath={range .items[*]}{.metadata.annotations.fleetcache\.io/cluster}/{.metadata.namespace}/{.metadata.name}{"\n"}{end}`)
	if err != nil || strings.Contains(stderr, "partial answer") {
		t.Fatalf("kubectl get -o jsonpath on /fleet through %s: %v, stderr %q", r.id, err, stderr)
	}
	if got := sorted(out); fmt.Sprint(got) != fmt.Sprint(truth) {
		t.Errorf("kubectl on /fleet through %s: %d configmaps, kubectl per context says %d\n got  %v\n want %v", r.id, len(got), len(truth), got, truth)
	}
	// The Table kubectl prints by default: one row per object, in cluster order.
	out, stderr, err = k.run("--server", server, "get", "configmaps", "-A", "-l", testfleet.SeedLabel, "--no-headers")
	if err != nil || strings.Contains(stderr, "partial answer") {
		t.Fatalf("kubectl get on /fleet through %s: %v, stderr %q", r.id, err, stderr)
	}
	var rows []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line) // NAMESPACE CLUSTER NAME ...
		if len(f) >= 3 {
			rows = append(rows, f[1]+"/"+f[0]+"/"+f[2])
		}
	}
	if fmt.Sprint(rows) != fmt.Sprint(truth) {
		t.Errorf("kubectl table on /fleet through %s: %d rows in this order, want kubectl's %d in cluster order\n got  %v\n want %v", r.id, len(rows), len(truth), rows, truth)
	}
	// A get by name: the first cluster (in name order) that has it, as a single daemon answers.
	first := strings.SplitN(truth[0], "/", 3)
	out, _, err = k.run("--server", server, "get", "configmap", "-n", first[1], first[2], "-o", `jsonpath={.metadata.annotations.fleetcache\.io/cluster}`)
	if err != nil || out != first[0] {
		t.Errorf("kubectl get configmap %s/%s on /fleet through %s: %q, %v; want it from %s", first[1], first[2], r.id, out, err, first[0])
	}

	// A client-go reflector (list, then watch from the list's resourceVersion), keyed by
	// cluster too: through this replica it holds every cluster's objects.
	cfg := &rest.Config{Host: server}
	cs := kubernetes.NewForConfigOrDie(cfg)
	store := cache.NewStore(func(obj any) (string, error) {
		m, err := meta.Accessor(obj)
		if err != nil {
			return "", err
		}
		return m.GetAnnotations()["fleetcache.io/cluster"] + "/" + m.GetNamespace() + "/" + m.GetName(), nil
	})
	lw := cache.NewFilteredListWatchFromClient(cs.CoreV1().RESTClient(), "configmaps", metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.LabelSelector = "shard-fleet=yes"
	})
	// List, then watch from the list's resourceVersion: client-go's watch-list (the
	// default) collects the initial events in a store keyed by namespace/name, where the
	// same name in several clusters would collide (README: client-go).
	refl := cache.NewReflector(listThenWatch{lw}, &corev1.ConfigMap{}, store, 0)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go refl.Run(stop)
	testfleet.Eventually(t, 30*time.Second, "the reflector through "+r.id+" listed", func() (bool, string) {
		return refl.LastSyncResourceVersion() != "", "no list yet"
	})
	if rv := refl.LastSyncResourceVersion(); !strings.HasPrefix(rv, "sharded.") {
		t.Errorf("list through %s: resourceVersion %q, want the router's", r.id, rv)
	}
	fr := &fleetReflector{store: store, via: r.id, url: r.url}
	fr.createAndWait(t, "fleet")

	// The watch-list protocol through the router: every object as an ADDED event, then
	// one bookmark closing the initial events, with the router's resourceVersion.
	resp, err := http.Get(server + "/api/v1/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=shard-fleet%3Dyes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var added []string
	for {
		var ev struct {
			Type   string
			Object struct {
				Metadata struct {
					Name, Namespace, ResourceVersion string
					Annotations                      map[string]string
				}
			}
		}
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("watch-list through %s: %v after %d events", r.id, err, len(added))
		}
		m := ev.Object.Metadata
		if ev.Type == "ADDED" {
			added = append(added, m.Annotations["fleetcache.io/cluster"]+"/"+m.Namespace+"/"+m.Name)
			continue
		}
		if ev.Type != "BOOKMARK" || m.Annotations[metav1.InitialEventsAnnotationKey] != "true" || !strings.HasPrefix(m.ResourceVersion, "sharded.") {
			t.Fatalf("watch-list through %s: %s event %+v before the end of the initial events", r.id, ev.Type, m)
		}
		break
	}
	sort.Strings(added)
	if fmt.Sprint(added) != fmt.Sprint(fr.want) {
		t.Errorf("watch-list through %s: initial events %v, want %v", r.id, added, fr.want)
	}
	// kubectl get -w (a Table list, then a Table watch from its resourceVersion) through
	// the replica shows a change in every context of an apiserver, whichever replica
	// caches it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(os.Getenv("FLEETCACHE_BIN"), "kubectl"), "--kubeconfig", k.kubeconfig, "--cache-dir", k.cacheDir,
		"--server", server, "get", "configmaps", "-A", "-l", "shard-fleet=yes", "-w", "--output-watch-events")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	watched := func(name string, n int) map[string]bool {
		seen := map[string]bool{}
		for len(seen) < n && sc.Scan() {
			f := strings.Fields(sc.Text()) // EVENT NAMESPACE CLUSTER NAME ...
			if len(f) >= 4 && f[0] == "ADDED" && f[3] == name {
				seen[f[2]] = true
			}
		}
		return seen
	}
	if seen := watched("fleet-0", shardContexts/3); len(seen) != shardContexts/3 {
		t.Fatalf("kubectl get -w through %s listed fleet-0 in %v", r.id, keys(seen))
	}
	bc := kubernetes.NewForConfigOrDie(fleet.Clusters[1].AdminConfig())
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "fleet-w", Labels: map[string]string{"shard-fleet": "yes"}}}
	if _, err := bc.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if seen := watched("fleet-w", shardContexts/3); len(seen) != shardContexts/3 {
		t.Errorf("kubectl get -w through %s showed fleet-w in %v, want the %d contexts of %s", r.id, keys(seen), shardContexts/3, fleet.Clusters[1].Name)
	}
	if err := bc.CoreV1().ConfigMaps("default").Delete(context.Background(), cm.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	return fr
}

// listThenWatch makes a reflector list and then watch, instead of client-go's default
// watch-list.
type listThenWatch struct{ cache.ListerWatcher }

func (listThenWatch) IsWatchListSemanticsUnSupported() bool { return true }

// fleetReflector is a reflector's store of configmaps labelled shard-fleet=yes.
type fleetReflector struct {
	store cache.Store
	via   string
	url   string
	want  []string
}

// createAndWait creates one configmap in every apiserver (each lands in the contexts over
// it, cached by several replicas) and waits until the store holds it from every context.
func (fr *fleetReflector) createAndWait(t *testing.T, prefix string) {
	t.Helper()
	for i := range fleet.Clusters {
		name := fmt.Sprintf("%s-%d", prefix, i)
		cs := kubernetes.NewForConfigOrDie(fleet.Clusters[i].AdminConfig())
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"shard-fleet": "yes"}}}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cs.CoreV1().ConfigMaps("default").Delete(context.Background(), name, metav1.DeleteOptions{})
		})
		for c := i + 1; c <= shardContexts; c += len(fleet.Clusters) {
			fr.want = append(fr.want, fmt.Sprintf("ctx-%04d/default/%s", c, name))
		}
	}
	sort.Strings(fr.want)
	testfleet.Eventually(t, 2*time.Minute, "the reflector through "+fr.via+" holds the "+prefix+" objects of every cluster", func() (bool, string) {
		got := fr.store.ListKeys()
		sort.Strings(got)
		resp, err := http.Get(fr.url + "/fleet/api/v1/configmaps?labelSelector=shard-fleet%3Dyes")
		dbg := ""
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			dbg = fmt.Sprintf("HTTP %d %v %d bytes: %.3000s", resp.StatusCode, resp.Header, len(b), b)
		}
		return fmt.Sprint(got) == fmt.Sprint(fr.want), fmt.Sprintf("%d of %d: %v; DEBUG %s", len(got), len(fr.want), got, dbg)
	})
}

// TestShardedReplicaServesACustomResourceItsClustersLack: a custom resource that only some
// clusters serve is in every replica's discovery, so kubectl through any replica (behind
// one Service, a client gets any) lists it. Two contexts, ctx-0001 on alpha (which has
// Widgets) and ctx-0002 on bravo (which has none). A first replica caches both; a second
// joins that takes ctx-0002 only (its identity is chosen so), so it has never cached a
// Widget itself.
func TestShardedReplicaServesACustomResourceItsClustersLack(t *testing.T) {
	sf := newShardFleet(t, 2, "[{name: namespaces}, {name: widgets.example.com}]")
	if fleet.Clusters[0].Name != "alpha" || fleet.Clusters[1].Name != "bravo" {
		t.Fatalf("the fleet's first clusters are %s and %s, want alpha (with Widgets) and bravo (without)", fleet.Clusters[0].Name, fleet.Clusters[1].Name)
	}
	var truth []string
	for i, out := range fanOutContexts(t, sf.kubeconfig, []string{"ctx-0001", "ctx-0002"}, "get", "widgets", "-A", "-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}`) {
		for _, l := range strings.Fields(out) {
			truth = append(truth, fmt.Sprintf("ctx-%04d/%s", i+1, l))
		}
	}
	sort.Strings(truth)
	if len(truth) == 0 {
		t.Fatal("alpha has no Widgets: the test needs some")
	}
	first := sf.start(t, "learn", 1)
	testfleet.Eventually(t, 60*time.Second, "the first replica caches both contexts", func() (bool, string) {
		got := first.view(t).synced()
		return len(got) == 2, fmt.Sprintf("synced: %v", got)
	})
	for {
		members := []sharding.Member{{Identity: first.id}, {Identity: fmt.Sprintf("learn-%d", sf.started)}}
		if sharding.Owners("ctx-0001", members, 1)[0] == members[0] && sharding.Owners("ctx-0002", members, 1)[0] == members[1] {
			break
		}
		sf.started++ // that identity would not split the contexts so: try the next
	}
	without := sf.start(t, "learn", 1)
	testfleet.Eventually(t, 60*time.Second, "the new replica caches ctx-0002 only", func() (bool, string) {
		a, b := first.view(t).synced(), without.view(t).synced()
		return fmt.Sprint(a, b) == "[ctx-0001] [ctx-0002]", fmt.Sprintf("%s: %v, %s: %v", first.id, a, without.id, b)
	})
	k := newFleetKubectl(t, &daemon{url: without.url, bin: sf.bin})
	out, stderr, err := k.run("get", "widgets", "-A", "-o", clusterNsName)
	if err != nil {
		t.Fatalf("kubectl get widgets -A through %s, which never cached a Widget: %v\n%s", without.id, err, stderr)
	}
	if got := sorted(out); !slices.Equal(got, truth) {
		t.Errorf("through %s: %v\nwant %v", without.id, got, truth)
	}
	// The table has the CRD's printer columns, as through a replica that caches Widgets.
	table, stderr, err := k.run("get", "wg", "-A")
	if err != nil {
		t.Fatalf("kubectl get wg -A (table) through %s: %v\n%s", without.id, err, stderr)
	}
	if head, _, _ := strings.Cut(table, "\n"); !strings.Contains(head, "SIZE") || rows(table) != len(truth) {
		t.Errorf("through %s, a table of %d rows headed %q, want %d rows with the CRD's columns", without.id, rows(table), head, len(truth))
	}
}

// TestAForgedLeaseIsNoReplica: someone who may write Leases in the replicas' namespace
// registers a recording server as a replica of the group (the group's label and the
// server's address, without a proof of the group key), and another Lease with a real
// replica's proof copied onto the recorder's address. Neither counts: the recorder owns
// no cluster and gets no request at all (so no caller's token) while callers list,
// count, get, watch and use the Kubernetes API through both replicas; the replicas report
// both Leases as refused; and a request the recorder sends a replica with a forged peer
// assertion gets 401. An assertion signed with the group's key (which the replicas keep
// in the Secret forged-group-key) is accepted, within the asserted scope, unless it is
// expired or made out to another replica. Failed before: the forged Lease was a member,
// owned clusters and received the callers' bearer tokens.
func TestAForgedLeaseIsNoReplica(t *testing.T) {
	const contexts = 6
	sf := newShardFleet(t, contexts, "[{name: configmaps}]")
	admin, team := "admin-token-0123456789", "team-token-0123456789"
	tokens := filepath.Join(sf.dir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte(fmt.Sprintf("users:\n  - {name: admin, token: %s}\n  - {name: team, token: %s, clusters: [\"ctx-000[1-3]\"]}\n", admin, team)), 0o600); err != nil {
		t.Fatal(err)
	}
	sf.extra = "auth: {tokenFile: " + tokens + "}\n"

	var mu sync.Mutex
	var got []string // what the recorder was sent: method, path, Authorization
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.String()+" Authorization="+r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	t.Cleanup(evil.Close)
	home, err := kubernetes.NewForConfig(fleet.Clusters[0].AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	leases := home.CoordinationV1().Leases("default")
	// forge writes a Lease of the group and renews it every second until the test ends:
	// a live claim, not one that expires while the test runs.
	forge := func(name, holder, proof string) {
		secs := int32(3600)
		now := metav1.NewMicroTime(time.Now())
		l := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{sharding.GroupLabel: "forged"},
				Annotations: map[string]string{sharding.AddressAnnotation: evil.URL}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &now},
		}
		if proof != "" {
			l.Annotations[sharding.ProofAnnotation] = proof
		}
		if _, err := leases.Create(context.Background(), l, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		t.Cleanup(func() { cancel(); <-done })
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				if l, err := leases.Get(ctx, name, metav1.GetOptions{}); err == nil {
					now := metav1.NewMicroTime(time.Now())
					l.Spec.RenewTime = &now
					_, _ = leases.Update(ctx, l, metav1.UpdateOptions{})
				}
			}
		}()
	}
	forge("forged-evil", "evil", "") // before the replicas start: they must never count it
	rs := []shardReplica{sf.start(t, "forged", 1), sf.start(t, "forged", 1)}
	real, err := leases.Get(context.Background(), "forged-"+rs[0].id, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// rs[0]'s own, valid proof, on a Lease that claims rs[0]'s identity at the recorder.
	forge("forged-copy", rs[0].id, real.Annotations[sharding.ProofAnnotation])

	get := func(r shardReplica, token, path string, q url.Values, v any) int {
		return getAs(t, r.url, token, path, q, v)
	}
	testfleet.Eventually(t, 60*time.Second, "both replicas refuse both Leases and answer for every context", func() (bool, string) {
		var msg []string
		ok := true
		for _, r := range rs {
			var v clustersView
			get(r, admin, "/api/v1/clusters", nil, &v)
			if v.Sharding == nil {
				return false, r.id + ": no sharding block"
			}
			var refused []string
			for _, l := range v.Sharding.Refused {
				refused = append(refused, l.Lease)
			}
			sort.Strings(refused)
			members := fmt.Sprint(v.Sharding.Members)
			ok = ok && fmt.Sprint(refused) == "[forged-copy forged-evil]" && len(v.Sharding.Members) == 2 && !strings.Contains(members, evil.URL) && len(v.Sharding.Owners) == contexts
			msg = append(msg, fmt.Sprintf("%s: members %s, refused %v", r.id, members, refused))
		}
		var p shardPage
		code := get(rs[0], admin, "/api/v1/objects", url.Values{"resource": {"configmaps"}, "limit": {"5000"}}, &p)
		ok = ok && code == http.StatusOK && !p.Partial && len(p.Clusters) == contexts
		return ok, strings.Join(msg, "; ") + fmt.Sprintf("; list HTTP %d partial %v", code, p.Partial)
	})
	for _, r := range rs {
		var v clustersView
		get(r, admin, "/api/v1/clusters", nil, &v)
		for c, owners := range v.Sharding.Owners {
			if len(owners) != 1 || (owners[0] != rs[0].id && owners[0] != rs[1].id) {
				t.Errorf("%s: %s is owned by %v", r.id, c, owners)
			}
		}
		for _, l := range v.Sharding.Refused {
			if !strings.Contains(l.Reason, sharding.ProofAnnotation) || l.Address != evil.URL {
				t.Errorf("%s: refused %+v: want the recorder's address and a reason naming the proof", r.id, l)
			}
		}
	}

	// Every route a router takes, through both replicas, as a user with a token and as
	// a restricted one.
	for _, r := range rs {
		for _, token := range []string{admin, team} {
			q := url.Values{"resource": {"configmaps"}}
			for _, path := range []string{"/api/v1/objects", "/api/v1/count", "/api/v1/resources", "/fleet/api/v1/configmaps", "/fleet/api"} {
				if code := get(r, token, path, q, nil); code != http.StatusOK {
					t.Errorf("%s: %s: HTTP %d", r.id, path, code)
				}
			}
			for i := 1; i <= 3; i++ {
				if code := get(r, token, fmt.Sprintf("/clusters/ctx-%04d/api/v1/configmaps", i), nil, nil); code != http.StatusOK {
					t.Errorf("%s: /clusters/ctx-%04d: HTTP %d", r.id, i, code)
				}
				var one shardPage
				get(r, token, "/api/v1/objects", url.Values{"resource": {"configmaps"}, "cluster": {fmt.Sprintf("ctx-%04d", i)}, "limit": {"1"}}, &one)
				if len(one.Items) != 1 {
					t.Fatalf("%s: ctx-%04d lists no configmap", r.id, i)
				}
				m := one.Items[0].Object.Metadata
				if code := get(r, token, fmt.Sprintf("/api/v1/objects/ctx-%04d/configmaps/%s/%s", i, m.Namespace, m.Name), nil, nil); code != http.StatusOK {
					t.Errorf("%s: a get in ctx-%04d: HTTP %d", r.id, i, code)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/api/v1/watch?resource=configmaps", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body) // until the deadline
				resp.Body.Close()
			}
			cancel()
		}
	}
	time.Sleep(time.Second) // anything in flight to the recorder arrives
	mu.Lock()
	if len(got) > 0 {
		t.Errorf("the forged replica was sent %d requests:\n%s", len(got), strings.Join(got, "\n"))
	}
	mu.Unlock()

	// The recorder, now calling a replica itself.
	peerGet := func(r shardReplica, header, bearer string) (int, string) {
		target := r.url + "/api/v1/objects?" + url.Values{"local": {"true"}, "resource": {"configmaps"}, "limit": {"5000"}}.Encode()
		if bearer != "" {
			return fetch(t, target, sharding.PeerHeader, header, "Authorization", "Bearer "+bearer)
		}
		return fetch(t, target, sharding.PeerHeader, header)
	}
	otherKey, _ := sharding.NewGroupKey([]byte(strings.Repeat("x", 32)))
	adminClaim := func(to string, exp time.Time) sharding.Assertion {
		return sharding.Assertion{From: "evil", To: to, Expires: exp.UnixMilli(), User: &sharding.PeerUser{Name: "admin"}}
	}
	forged := adminClaim(rs[0].id, time.Now().Add(time.Minute)).Encode(otherKey)
	for name, tc := range map[string]struct{ header, bearer, want string }{
		"forged":                     {forged, "", "signature does not match"},
		"forged, with a token":       {forged, admin, "carries no Authorization"},
		"garbage":                    {"forged", "", "malformed"},
		"no user, on authentication": {sharding.Assertion{From: "evil", To: rs[0].id, Expires: time.Now().Add(time.Minute).UnixMilli()}.Encode(otherKey), "", "signature does not match"},
	} {
		if code, body := peerGet(rs[0], tc.header, tc.bearer); code != http.StatusUnauthorized || !strings.Contains(body, sharding.PeerHeader) || !strings.Contains(body, tc.want) {
			t.Errorf("%s: HTTP %d %s; want 401 saying %q", name, code, body, tc.want)
		}
	}
	// With the group's key (which only the replicas' namespace holds), an assertion holds:
	// for the replica it names, while it is fresh, and within the scope it asserts.
	secret, err := home.CoreV1().Secrets("default").Get(context.Background(), sharding.GroupKeySecretName("forged"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := sharding.NewGroupKey(secret.Data[sharding.GroupKeyData])
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		header string
		want   string
	}{
		"expired":         {adminClaim(rs[0].id, time.Now().Add(-time.Second)).Encode(key), "expired"},
		"another replica": {adminClaim(rs[1].id, time.Now().Add(time.Minute)).Encode(key), "made out to replica"},
	} {
		if code, body := peerGet(rs[0], tc.header, ""); code != http.StatusUnauthorized || !strings.Contains(body, tc.want) {
			t.Errorf("%s: HTTP %d %s; want 401 saying %q", name, code, body, tc.want)
		}
	}
	teamClaim := sharding.Assertion{From: rs[1].id, To: rs[0].id, Expires: time.Now().Add(time.Minute).UnixMilli(), User: &sharding.PeerUser{Name: "team", Grants: []auth.Grant{auth.NewGrant([]string{"ctx-0001"}, nil)}}}
	code, body := peerGet(rs[0], teamClaim.Encode(key), "")
	var p shardPage
	_ = json.Unmarshal([]byte(body), &p)
	for _, it := range p.Items {
		if it.Cluster != "ctx-0001" {
			t.Errorf("an assertion for ctx-0001 only sees %s", it.Cluster)
			break
		}
	}
	if code != http.StatusOK {
		t.Errorf("a valid assertion: HTTP %d %s", code, body)
	}
	// Metrics say it too.
	var metrics string
	req, _ := http.NewRequest(http.MethodGet, rs[0].url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
	}
	for _, want := range []string{"fleetcache_shard_refused_leases 2", "fleetcache_shard_peer_assertions_refused_total 6", "fleetcache_shard_members 2"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestShardedReplicasOverTLS: replicas serving HTTPS with certificates of a private CA
// reach each other when sharding.peerCAFile names that CA, and answer for the whole
// fleet; without it a replica cannot verify its peer and that peer's clusters are
// partial (ReplicaUnavailable). Failed before: a replica trusted the system's roots only,
// and the configuration had no peerCAFile.
func TestShardedReplicasOverTLS(t *testing.T) {
	const contexts = 6
	sf := newShardFleet(t, contexts, "[{name: configmaps}]")
	crt, key, err := cert.GenerateSelfSignedCertKey("localhost", []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	crtFile, keyFile := filepath.Join(sf.dir, "serving.crt"), filepath.Join(sf.dir, "serving.key")
	for f, b := range map[string][]byte{crtFile: crt, keyFile: key} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(crt)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	getJSON := func(url string, v any) int {
		resp, err := client.Get(url)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(v)
		return resp.StatusCode
	}
	// start runs a replica of group over HTTPS, with the CA as peerCAFile or without.
	start := func(group string, n int, peerCA bool) string {
		addr := freeAddr(t)
		extra := ""
		if peerCA {
			extra = "  peerCAFile: " + crtFile + "\n"
		}
		cfg := filepath.Join(sf.dir, fmt.Sprintf("%s-%d.yaml", group, n))
		body := fmt.Sprintf(`kubeconfig: [%s]
resources: %s
listen: %s
tls: {certFile: %s, keyFile: %s}
log: {level: debug}
sharding:
  homeContext: %s
  homeKubeconfig: %s
  namespace: default
  group: %s
  identity: %s-%d
  advertiseURL: https://%s
  leaseDuration: %s
%s`, sf.kubeconfig, sf.resources, addr, crtFile, keyFile, fleet.Clusters[0].Name, fleet.Kubeconfig, group, group, n, addr, shardLease, extra)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(sf.dir, fmt.Sprintf("%s-%d.log", group, n))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sf.bin, "serve", "--config", cfg)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		testfleet.Eventually(t, 60*time.Second, group+" replica ready over https", func() (bool, string) {
			select {
			case <-done:
				log, _ := os.ReadFile(logPath)
				t.Fatalf("the replica exited:\n%s", log)
			default:
			}
			var v any
			code := getJSON("https://"+addr+"/readyz", &v)
			return code == http.StatusOK, fmt.Sprintf("HTTP %d", code)
		})
		return "https://" + addr
	}
	list := func(base string) (shardPage, int) {
		var p shardPage
		code := getJSON(base+"/api/v1/objects?"+url.Values{"resource": {"configmaps"}, "limit": {"5000"}}.Encode(), &p)
		return p, code
	}
	members := func(base string) int {
		var v clustersView
		getJSON(base+"/api/v1/clusters", &v)
		if v.Sharding == nil {
			return 0
		}
		return len(v.Sharding.Members)
	}

	withCA := []string{start("tlsca", 0, true), start("tlsca", 1, true)}
	for _, base := range withCA {
		testfleet.Eventually(t, 60*time.Second, base+" answers for every context over https", func() (bool, string) {
			p, code := list(base)
			return code == http.StatusOK && !p.Partial && len(p.Clusters) == contexts && members(base) == 2,
				fmt.Sprintf("HTTP %d, partial %v, %d clusters, %d members: %+v", code, p.Partial, len(p.Clusters), members(base), p.Clusters)
		})
	}

	withoutCA := []string{start("tlsnoca", 0, false), start("tlsnoca", 1, false)}
	testfleet.Eventually(t, 60*time.Second, "without the CA: the peer's clusters are partial, for want of trust", func() (bool, string) {
		p, code := list(withoutCA[0])
		untrusted := 0
		for _, f := range p.Clusters {
			if f.Reason == "ReplicaUnavailable" && strings.Contains(f.Message, "certificate") {
				untrusted++
			}
		}
		return code == http.StatusOK && members(withoutCA[0]) == 2 && p.Partial && untrusted > 0 && untrusted < contexts,
			fmt.Sprintf("HTTP %d, %d members, partial %v, %d clusters refused for the certificate", code, members(withoutCA[0]), p.Partial, untrusted)
	})
}
