package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// fault is one thing that goes wrong in one or more clusters, and its repair.
type fault struct {
	name    string
	victims []*testfleet.Cluster
	// shows is true once fleetcache's status reflects the fault.
	shows   func(d *daemon, t *testing.T) bool
	apply   func(t *testing.T)
	recover func(t *testing.T)
}

// TestFaultSuite runs faults against the real fleet while a bounded query load and a
// writer run. Once fleetcache shows a fault, its connections to the victims are cut off
// (a proxy stops passing what they send), the victims are repaired and written to
// (creates, updates and deletes fleetcache cannot see), and then fleetcache may reach them
// again: its first answer that claims to be current must hold those writes. Each such
// answer is compared with a fresh LIST from every cluster: no object lost, no ghost, every
// resourceVersion current; a watch over the whole run must never see an impossible
// sequence. It logs a report.
func TestFaultSuite(t *testing.T) {
	d, proxies := startPartitionableDaemon(t)
	a, b, c := fleet.Clusters[0], fleet.Clusters[1], fleet.Clusters[2]
	ctx, cancel := context.WithCancel(context.Background())

	// A bounded query load: one request at a time, all through the suite. fleetcache
	// answers from memory, so faults in clusters must not make it fail.
	var queries, queryErrors atomic.Int64
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // stop the load before waiting for it
	wg.Go(func() {
		for ctx.Err() == nil {
			resp, err := http.Get(d.url + "/api/v1/objects?resource=pods&limit=500")
			queries.Add(1)
			if err != nil || resp.StatusCode != http.StatusOK {
				queryErrors.Add(1)
			}
			if resp != nil {
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	// A writer keeps configmaps changing in every cluster, and counts the writes each
	// cluster acknowledged. Each write holds gate for reading; a comparison takes it for
	// writing, which waits for the writes in flight.
	var gate sync.RWMutex
	written := map[string]*writeCounts{}
	for _, cl := range fleet.Clusters {
		cs := kubernetes.NewForConfigOrDie(cl.AdminConfig())
		counts := &writeCounts{}
		written[cl.Name] = counts
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				gate.RLock()
				wctx, wcancel := context.WithTimeout(ctx, time.Second)
				// Each name is created, updated, then deleted, in turn with the others.
				name := fmt.Sprintf("churn-%d", i%5)
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"e2e": "fault"}}, Data: map[string]string{"i": fmt.Sprint(i)}}
				var err error
				switch i / 5 % 3 {
				case 0:
					if _, err = cs.CoreV1().ConfigMaps("default").Create(wctx, cm, metav1.CreateOptions{}); err == nil {
						counts.created.Add(1)
					}
				case 1:
					if _, err = cs.CoreV1().ConfigMaps("default").Update(wctx, cm, metav1.UpdateOptions{}); err == nil {
						counts.updated.Add(1)
					}
				case 2:
					if err = cs.CoreV1().ConfigMaps("default").Delete(wctx, name, metav1.DeleteOptions{}); err == nil {
						counts.deleted.Add(1)
					}
				}
				wcancel()
				gate.RUnlock()
				time.Sleep(30 * time.Millisecond)
			}
		})
	}

	// A watch over everything, checked for impossible sequences.
	checker := newSequenceChecker()
	ch, stop := openWatch(t, d, url.Values{"resource": {"configmaps"}})
	defer stop()
	wg.Go(func() {
		for l := range ch {
			checker.see(l)
		}
	})

	rss := func() float64 { v, _ := value(d.scrape(t), "process_resident_memory_bytes", nil); return v }
	rssStart := rss()

	notSynced := func(cl *testfleet.Cluster) func(*daemon, *testing.T) bool {
		return func(d *daemon, t *testing.T) bool {
			v, _ := value(d.scrape(t), "fleetcache_cluster_synced", map[string]string{"cluster": cl.Name})
			return v == 0
		}
	}
	bothNotSynced := func(x, y *testfleet.Cluster) func(*daemon, *testing.T) bool {
		return func(d *daemon, t *testing.T) bool { return notSynced(x)(d, t) && notSynced(y)(d, t) }
	}
	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	restart := func(t *testing.T, cls ...*testfleet.Cluster) {
		for _, cl := range cls {
			must(t, cl.Restart(context.Background()))
		}
	}
	crds := dynamic.NewForConfigOrDie(a.AdminConfig()).Resource(schemaCRD)
	faults := []fault{
		{name: "SIGSTOP/SIGCONT one", victims: []*testfleet.Cluster{b}, shows: notSynced(b),
			apply: func(t *testing.T) { must(t, b.Stop()) }, recover: func(t *testing.T) { must(t, b.Cont()) }},
		{name: "kill/restart one", victims: []*testfleet.Cluster{c}, shows: notSynced(c),
			apply: func(t *testing.T) { must(t, c.Kill()) }, recover: func(t *testing.T) { restart(t, c) }},
		{name: "kill etcd/restart one", victims: []*testfleet.Cluster{a}, shows: notSynced(a),
			apply:   func(t *testing.T) { must(t, a.KillEtcd()) },
			recover: func(t *testing.T) { must(t, a.StartEtcd()); must(t, a.WaitReady(context.Background())) }},
		{name: "SIGSTOP/SIGCONT two", victims: []*testfleet.Cluster{a, b}, shows: bothNotSynced(a, b),
			apply:   func(t *testing.T) { must(t, a.Stop()); must(t, b.Stop()) },
			recover: func(t *testing.T) { must(t, a.Cont()); must(t, b.Cont()) }},
		{name: "kill/restart two", victims: []*testfleet.Cluster{b, c}, shows: bothNotSynced(b, c),
			apply: func(t *testing.T) { must(t, b.Kill()); must(t, c.Kill()) }, recover: func(t *testing.T) { restart(t, b, c) }},
		{name: "kill etcd/restart two", victims: []*testfleet.Cluster{a, c}, shows: bothNotSynced(a, c),
			apply: func(t *testing.T) { must(t, a.KillEtcd()); must(t, c.KillEtcd()) },
			recover: func(t *testing.T) {
				must(t, a.StartEtcd())
				must(t, c.StartEtcd())
				must(t, a.WaitReady(context.Background()))
				must(t, c.WaitReady(context.Background()))
			}},
		{name: "reader RBAC binding deleted/restored", victims: []*testfleet.Cluster{c},
			shows: func(d *daemon, t *testing.T) bool {
				v, _ := value(d.scrape(t), "fleetcache_resource_phase", map[string]string{"cluster": c.Name, "resource": "pods", "phase": "Forbidden"})
				return v == 1
			},
			// Existing watches outlive an RBAC change; a restart of the apiserver makes the
			// informers list again, and those lists are forbidden.
			apply:   func(t *testing.T) { must(t, c.UnbindReader(context.Background())); restart(t, c) },
			recover: func(t *testing.T) { must(t, c.BindReader(context.Background())) }},
		{name: "CRD deleted/recreated", victims: []*testfleet.Cluster{a},
			shows: func(d *daemon, t *testing.T) bool {
				v, _ := value(d.scrape(t), "fleetcache_resource_phase", map[string]string{"cluster": a.Name, "resource": "widgets.example.com", "phase": "NotServed"})
				return v == 1
			},
			apply: func(t *testing.T) {
				must(t, crds.Delete(context.Background(), testfleet.WidgetCRDName, metav1.DeleteOptions{}))
			},
			recover: func(t *testing.T) {
				// Seeding installs the CRD again and recreates its widgets.
				waitFor(t, 60*time.Second, "CRD gone", func() (bool, string) {
					_, err := crds.Get(context.Background(), testfleet.WidgetCRDName, metav1.GetOptions{})
					return err != nil, "still there"
				})
				_, err := testfleet.Seed(context.Background(), a, testfleet.SeedOptions{})
				must(t, err)
			}},
	}

	var report []string
	for _, f := range faults {
		start := time.Now()
		f.apply(t)
		waitFor(t, 60*time.Second, f.name+": status shows the fault", func() (bool, string) { return f.shows(d, t), "not yet" })
		shown := time.Since(start)
		// fleetcache is cut off from the victims; they are repaired, and take writes it
		// cannot see until it reaches them again.
		for _, v := range f.victims {
			proxies[v.Name].SetDelay(partitioned)
		}
		recoverAt := time.Now()
		f.recover(t)
		before := map[string]writes{}
		for _, v := range f.victims {
			before[v.Name] = written[v.Name].read()
		}
		waitFor(t, 60*time.Second, f.name+": victims created, updated and deleted ConfigMaps while cut off", func() (bool, string) {
			var msg []string
			for _, v := range f.victims {
				w := written[v.Name].read().since(before[v.Name])
				if w.created < outageWrites || w.updated < outageWrites || w.deleted < outageWrites {
					msg = append(msg, fmt.Sprintf("%s: %s", v.Name, w))
				}
			}
			return len(msg) == 0, strings.Join(msg, ", ")
		})
		// The writes stop, and fleetcache reaches the victims again: from then on the
		// clusters do not change.
		gate.Lock()
		var during []string
		for _, v := range f.victims {
			during = append(during, v.Name+" "+written[v.Name].read().since(before[v.Name]).String())
			proxies[v.Name].SetDelay(0)
			proxies[v.Name].Cut() // with what they held back
		}
		healed := time.Now()
		lost, ghosts := firstCurrentAnswerIsTrue(t, d, healed)
		recovered := time.Since(recoverAt)
		gate.Unlock()
		line := fmt.Sprintf("%-38s status showed it after %6s, current again %6s after repair; while cut off, %s; lost %d, ghosts %d",
			f.name, shown.Round(100*time.Millisecond), recovered.Round(100*time.Millisecond), strings.Join(during, ", "), lost, ghosts)
		report = append(report, line)
		if lost+ghosts > 0 {
			t.Errorf("%s", line)
		}
	}
	cancel()
	rssEnd := rss()
	t.Logf("fault suite report:\n%s\nqueries during the suite: %d, failed: %d; watch events checked: %d; RSS %.0f MiB -> %.0f MiB",
		strings.Join(report, "\n"), queries.Load(), queryErrors.Load(), checker.events.Load(), rssStart/(1<<20), rssEnd/(1<<20))
	if queryErrors.Load() > 0 {
		t.Errorf("%d queries failed during faults", queryErrors.Load())
	}
	if problems := checker.problems(); len(problems) > 0 {
		t.Errorf("impossible watch sequences:\n%s", strings.Join(problems, "\n"))
	}
	if rssEnd > 2*rssStart+200<<20 {
		t.Errorf("memory grew from %.0f MiB to %.0f MiB", rssStart/(1<<20), rssEnd/(1<<20))
	}
}

// partitioned is the proxies' delay while fleetcache is cut off from a cluster: nothing
// the cluster sends reaches it (the connections are cut when the partition ends).
const partitioned = time.Hour

// outageWrites is how many creates, updates and deletes each victim acknowledges while
// fleetcache is cut off from it.
const outageWrites = 3

// startPartitionableDaemon starts a fleetcache configured as the shared one, whose
// connection to each cluster goes through a proxy of its own.
func startPartitionableDaemon(t *testing.T) (*daemon, map[string]*testfleet.Proxy) {
	t.Helper()
	shared := startDaemon(t) // seeds the fleet and builds the binary
	kc, err := clientcmd.LoadFromFile(fleet.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	proxies := map[string]*testfleet.Proxy{}
	for _, c := range fleet.Clusters {
		proxy, err := c.StartProxy()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.Close() })
		proxies[c.Name] = proxy
		ctx := kc.Contexts[c.Name+"-reader"]
		if ctx == nil {
			t.Fatalf("no context %s-reader", c.Name)
		}
		entry := kc.Clusters[ctx.Cluster].DeepCopy()
		entry.Server = proxy.Server()
		kc.Clusters["proxied-"+c.Name] = entry
		ctx.Cluster = "proxied-" + c.Name
	}
	dir := t.TempDir()
	kubeconfig, config := filepath.Join(dir, "kubeconfig"), filepath.Join(dir, "config.yaml")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, []byte(daemonConfig(kubeconfig)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, shared.bin, nil, "--config", config)
	return &daemon{url: p.url}, proxies
}

// writeCounts counts the writes a cluster acknowledged.
type writeCounts struct{ created, updated, deleted atomic.Int64 }

type writes struct{ created, updated, deleted int64 }

func (c *writeCounts) read() writes {
	return writes{c.created.Load(), c.updated.Load(), c.deleted.Load()}
}

func (w writes) since(b writes) writes {
	return writes{w.created - b.created, w.updated - b.updated, w.deleted - b.deleted}
}

func (w writes) String() string {
	return fmt.Sprintf("%d created, %d updated, %d deleted", w.created, w.updated, w.deleted)
}

// faultResources are the resources the fault suite compares with the clusters.
var faultResources = []string{"pods", "configmaps", "deployments.apps", "widgets.example.com"}

// firstCurrentAnswerIsTrue polls fleetcache until its answers for every compared
// resource claim to be complete and current as of since (not partial, every cluster
// Synced, staleness bound reaching back before since), then compares those very answers
// with fresh lists from the clusters, which have not changed since. It returns what the
// answers lost (missing, or at an older resourceVersion) and their ghosts.
func firstCurrentAnswerIsTrue(t *testing.T, d *daemon, since time.Time) (lost, ghosts int) {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for {
		answers, current, why := map[string][]string{}, true, ""
		for _, res := range faultResources {
			items, ok, reason := currentAnswer(t, d, res, since)
			if !ok {
				current, why = false, res+": "+reason
				break
			}
			answers[res] = items
		}
		if current {
			for _, res := range faultResources {
				missing, extra := setDiff(answers[res], kubectlSetRV(t, res))
				if len(missing)+len(extra) > 0 {
					t.Errorf("%s: an answer claiming to be current since the repair was wrong: missing or outdated %v, ghosts %v", res, missing, extra)
				}
				lost += len(missing)
				ghosts += len(extra)
			}
			return lost, ghosts
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer claimed to be current within 120s of the repair; last: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// currentAnswer reads every object of a resource in one answer and reports whether the
// answer claims to hold everything the clusters had at since.
func currentAnswer(t *testing.T, d *daemon, resource string, since time.Time) ([]string, bool, string) {
	var page struct {
		objectsPage
		Clusters []struct {
			Cluster, Phase, ResourcePhase string
			StalenessSeconds              *float64
		} `json:"clusters"`
	}
	sent := time.Now()
	code := d.getJSON(t, "/api/v1/objects", url.Values{"resource": {resource}, "limit": {"5000"}}, &page)
	if code == http.StatusNotFound {
		return nil, false, "not cached anywhere"
	}
	if code != http.StatusOK || page.Continue != "" {
		t.Fatalf("objects %s: status %d, continue %q", resource, code, page.Continue)
	}
	if page.Partial {
		return nil, false, "partial"
	}
	for _, c := range page.Clusters {
		if c.StalenessSeconds == nil {
			return nil, false, c.Cluster + " has no staleness bound"
		}
		if !sent.Add(-time.Duration(*c.StalenessSeconds * float64(time.Second))).After(since) {
			return nil, false, fmt.Sprintf("%s only proven %.3fs back", c.Cluster, *c.StalenessSeconds)
		}
	}
	var out []string
	for _, it := range page.Items {
		m := it.Object.Metadata
		out = append(out, it.Cluster+"/"+m.Namespace+"/"+m.Name+"@"+m.ResourceVersion)
	}
	return out, true, ""
}

// setDiff returns what want has and got lacks, and what got has and want lacks.
func setDiff(got, want []string) (missing, extra []string) {
	g, w := map[string]bool{}, map[string]bool{}
	for _, k := range got {
		g[k] = true
	}
	for _, k := range want {
		w[k] = true
	}
	for k := range w {
		if !g[k] {
			missing = append(missing, k)
		}
	}
	for k := range g {
		if !w[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return missing, extra
}

func kubectlSetRV(t *testing.T, resource string) []string {
	var out []string
	for _, c := range fleet.Clusters {
		res, err := kubectl(t, c.Name, "get", resource, "-A", "-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}@{.metadata.resourceVersion}{"\n"}{end}`)
		if err != nil {
			if strings.Contains(res, "the server doesn't have a resource type") {
				continue
			}
			t.Fatalf("kubectl %s in %s: %v\n%s", resource, c.Name, err, res)
		}
		for _, l := range strings.Fields(res) {
			out = append(out, c.Name+"/"+l)
		}
	}
	return out
}

// sequenceChecker flags impossible event sequences: a change after the deletion of the
// same object (by uid), an object ADDED twice, an object going back to an older (or
// repeating the same) resourceVersion, or a cluster's stream going back in its positions.
// fleetcache numbers each cluster's events in order whatever the objects say (a relist
// that replays an older object is numbered after the last event), so only the objects'
// own resourceVersions show a cache that went back.
type sequenceChecker struct {
	mu      sync.Mutex
	deleted map[string]bool   // cluster/uid
	objRV   map[string]uint64 // cluster/uid -> the object's resourceVersion last seen
	lastRV  map[string]uint64 // cluster -> the stream's position
	bad     []string
	events  atomic.Int64
}

func newSequenceChecker() *sequenceChecker {
	return &sequenceChecker{deleted: map[string]bool{}, objRV: map[string]uint64{}, lastRV: map[string]uint64{}}
}

func (s *sequenceChecker) see(l watchLine) {
	if l.Type == "BOOKMARK" || l.Type == "ERROR" {
		return
	}
	s.events.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	m := l.Object.Metadata
	key := l.Cluster + "/" + string(m.UID)
	var objRV, rv uint64
	fmt.Sscan(m.ResourceVersion, &objRV)
	fmt.Sscan(l.ResourceVersion, &rv)
	prev, seen := s.objRV[key]
	switch {
	case s.deleted[key]:
		s.bad = append(s.bad, fmt.Sprintf("%s after DELETED for %s %s", l.Type, key, m.Name))
	case l.Type == "ADDED" && seen:
		s.bad = append(s.bad, fmt.Sprintf("%s %s ADDED again at %d (seen at %d)", key, m.Name, objRV, prev))
	case l.Type == "MODIFIED" && seen && objRV <= prev:
		s.bad = append(s.bad, fmt.Sprintf("%s %s MODIFIED from resourceVersion %d to %d", key, m.Name, prev, objRV))
	case l.Type == "DELETED" && seen && objRV < prev:
		s.bad = append(s.bad, fmt.Sprintf("%s %s DELETED at resourceVersion %d after %d", key, m.Name, objRV, prev))
	}
	s.objRV[key] = objRV
	if l.Type == "DELETED" {
		s.deleted[key] = true
	}
	if rv <= s.lastRV[l.Cluster] {
		s.bad = append(s.bad, fmt.Sprintf("cluster %s's stream went from position %d to %d", l.Cluster, s.lastRV[l.Cluster], rv))
	}
	s.lastRV[l.Cluster] = rv
}

func (s *sequenceChecker) problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bad...)
}

var schemaCRD = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
