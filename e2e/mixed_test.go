package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// The fleet is mixed (testfleet.Options): one cluster runs kube-apiserver v1.32 with the
// WatchList feature gate off, one keeps its ConfigMaps on a second etcd. These tests check
// that the fleet really is so, and that fleetcache serves it as kubectl sees it.

// oldCluster is the cluster that refuses watch-list streams.
func oldCluster(t testing.TB) *testfleet.Cluster {
	t.Helper()
	for _, c := range fleet.Clusters {
		if !c.WatchList() {
			return c
		}
	}
	t.Fatal("the fleet has no cluster with watch-list off: it is not the mixed fleet")
	return nil
}

// splitCluster is the cluster whose ConfigMaps live on a second etcd.
func splitCluster(t testing.TB) *testfleet.Cluster {
	t.Helper()
	for _, c := range fleet.Clusters {
		if c.ConfigMapsOnSecondEtcd() {
			return c
		}
	}
	t.Fatal("the fleet has no cluster with its ConfigMaps on a second etcd: it is not the mixed fleet")
	return nil
}

// statuses reads the daemon's /api/v1/clusters, by cluster name.
func statuses(t testing.TB, d *daemon) map[string]clusters.ClusterStatus {
	t.Helper()
	var v struct {
		Clusters []clusters.ClusterStatus `json:"clusters"`
	}
	if code := d.getJSON(t, "/api/v1/clusters", nil, &v); code != http.StatusOK {
		t.Fatalf("/api/v1/clusters: status %d", code)
	}
	out := map[string]clusters.ClusterStatus{}
	for _, c := range v.Clusters {
		out[c.Name] = c
	}
	return out
}

func resourceStatus(cs clusters.ClusterStatus, resource string) (clusters.ResourceStatus, bool) {
	for _, r := range cs.Resources {
		if r.Resource == resource {
			return r, true
		}
	}
	return clusters.ResourceStatus{}, false
}

// TestMixedFleetIsCachedAsKubectlSeesIt: fleetcache syncs every cluster of the mixed fleet,
// the old one included, and for every resource holds exactly the objects each cluster's own
// kubectl lists, with per-cluster counts to match.
func TestMixedFleetIsCachedAsKubectlSeesIt(t *testing.T) {
	d := startDaemon(t)
	old := oldCluster(t)
	waitFor(t, 60*time.Second, "every cluster Synced at the version it runs", func() (bool, string) {
		st := statuses(t, d)
		for _, c := range fleet.Clusters {
			s, ok := st[c.Name]
			if !ok || s.Phase != clusters.PhaseSynced || s.Version != c.Version {
				return false, fmt.Sprintf("%s: present %v, phase %s (%s: %s), version %q, want Synced at %s", c.Name, ok, s.Phase, s.Reason, s.Message, s.Version, c.Version)
			}
		}
		return true, ""
	})
	for _, res := range e2eResources {
		t.Run(res, func(t *testing.T) {
			var want []string
			if res == "secrets" {
				// The daemon does not serve Secrets (api.serveSecrets off): its metrics count them.
				waitFor(t, 30*time.Second, "secrets counted as every cluster's kubectl lists them", func() (bool, string) {
					want = kubectlSet(t, res, "-A")
					fams := d.scrape(t)
					for _, c := range fleet.Clusters {
						got, _ := value(fams, "fleetcache_objects", map[string]string{"cluster": c.Name, "resource": res})
						if int(got) != countIn(want, c.Name) {
							return false, fmt.Sprintf("%s: fleetcache_objects %v, kubectl %d", c.Name, got, countIn(want, c.Name))
						}
					}
					return true, ""
				})
			} else {
				waitFor(t, 30*time.Second, res+" as every cluster's kubectl lists it", func() (bool, string) {
					want = kubectlSet(t, res, "-A")
					got := apiSet(t, d, url.Values{"resource": {res}, "limit": {"50"}})
					missing, extra := setDiff(got, want)
					return len(missing) == 0 && len(extra) == 0, fmt.Sprintf("missing %v, extra %v", missing, extra)
				})
			}
			if n := countIn(want, old.Name); n == 0 && (res != "widgets.example.com" || testfleet.HasWidgets(old.Index)) {
				t.Errorf("kubectl lists no %s in %s: the seeded old cluster should have some", res, old.Name)
			}
			if res == "secrets" {
				return
			}
			var counts struct {
				Groups []struct {
					Values []string `json:"values"`
					Count  int      `json:"count"`
				} `json:"groups"`
			}
			if code := d.getJSON(t, "/api/v1/count", url.Values{"resource": {res}, "groupBy": {"cluster"}}, &counts); code != http.StatusOK {
				t.Fatalf("count %s: status %d", res, code)
			}
			byCluster := map[string]int{}
			for _, g := range counts.Groups {
				byCluster[g.Values[0]] = g.Count
			}
			for _, c := range fleet.Clusters {
				if got, want := byCluster[c.Name], countIn(want, c.Name); got != want {
					t.Errorf("%s in %s: fleetcache counts %d, kubectl lists %d", res, c.Name, got, want)
				}
			}
		})
	}
}

// rawGet sends GET path to a cluster as its reader and returns the status and at most
// 4 KiB of the body.
func rawGet(t testing.TB, cfg *rest.Config, path string) (int, string) {
	t.Helper()
	cfg.Timeout = 10 * time.Second
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(cfg.Host + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", cfg.Host, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body)
}

// TestOldClusterIsV132WithoutWatchList: the old cluster reports v1.32 and refuses the
// watch-list stream a current cluster serves, and fleetcache, started afresh, reports
// that version and took the LIST path there without calling it an error: no resource
// passed through a phase naming the refusal, no list or watch error was counted, each
// resource's refused stream was counted as a fallback, its status says List, and its
// objects arrived by a list (no ADDED events), not as a stream's initial events. The
// other clusters took the watch-list path, with no fallback.
func TestOldClusterIsV132WithoutWatchList(t *testing.T) {
	d := startFreshDaemon(t)
	old := oldCluster(t)
	for _, c := range fleet.Clusters {
		v, err := kubernetes.NewForConfigOrDie(c.ReaderConfig()).Discovery().ServerVersion()
		if err != nil {
			t.Fatalf("%s: /version: %v", c.Name, err)
		}
		want, minor := testfleet.CurrentVersion, "37"
		if c == old {
			want, minor = testfleet.OldVersion, "32"
		}
		if v.GitVersion != want || v.Minor != minor {
			t.Errorf("%s: /version %s (minor %q), want %s (minor %q)", c.Name, v.GitVersion, v.Minor, want, minor)
		}
	}
	if testfleet.OldVersion != "v1.32.13" {
		t.Errorf("the old cluster runs %s; this test is about v1.32.13", testfleet.OldVersion)
	}

	// What client-go's reflector sends for a watch-list stream.
	const stream = "/api/v1/namespaces?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"
	code, body := rawGet(t, old.ReaderConfig(), stream)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "sendInitialEvents") {
		t.Errorf("%s answered a watch-list request %d, want 422 naming sendInitialEvents:\n%s", old.Name, code, body)
	}
	for _, c := range fleet.Clusters {
		if c == old {
			continue
		}
		if code, body := rawGet(t, c.ReaderConfig(), stream); code != http.StatusOK || !strings.Contains(body, `"ADDED"`) {
			t.Errorf("%s answered a watch-list request %d, want 200 with its namespaces as ADDED events:\n%s", c.Name, code, body)
		}
	}

	st := statuses(t, d)
	if v := st[old.Name].Version; v != testfleet.OldVersion {
		t.Errorf("fleetcache reports %s at version %q, want %s", old.Name, v, testfleet.OldVersion)
	}
	fams := d.scrape(t)
	metric := func(name, cluster, resource string, extra ...string) float64 {
		labels := map[string]string{"cluster": cluster, "resource": resource}
		for i := 0; i+1 < len(extra); i += 2 {
			labels[extra[i]] = extra[i+1]
		}
		v, ok := value(fams, name, labels)
		if !ok {
			t.Errorf("no %s%v", name, labels)
		}
		return v
	}
	for _, c := range fleet.Clusters {
		for _, res := range e2eResources {
			if res == "widgets.example.com" && !testfleet.HasWidgets(c.Index) {
				continue
			}
			r, ok := resourceStatus(st[c.Name], res)
			fallbacks := metric("fleetcache_watch_list_fallbacks_total", c.Name, res)
			if c != old {
				if !ok || r.ListPath != clusters.ListPathWatchList || fallbacks != 0 {
					t.Errorf("%s %s: list path %q, %v watch-list fallbacks; want %s, 0", c.Name, res, r.ListPath, fallbacks, clusters.ListPathWatchList)
				}
				continue
			}
			lists, listErrors, watchErrors := metric("fleetcache_lists_total", c.Name, res), metric("fleetcache_list_errors_total", c.Name, res), metric("fleetcache_watch_errors_total", c.Name, res)
			if !ok || r.ListPath != clusters.ListPathList || fallbacks < 1 || lists < 1 || listErrors != 0 || watchErrors != 0 {
				t.Errorf("%s %s: list path %q, %v watch-list fallbacks, %v lists, %v list errors, %v watch errors; want %s, >= 1, >= 1, 0, 0 (a refused stream is no error)",
					c.Name, res, r.ListPath, fallbacks, lists, listErrors, watchErrors, clusters.ListPathList)
			}
		}
	}
	// The refusal never showed as a phase: the daemon logs every phase change.
	logs, err := os.ReadFile(d.log)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(logs), "\n") {
		if strings.Contains(line, `phase changed"`) && strings.Contains(line, "sendInitialEvents") {
			t.Errorf("a phase named the refused watch-list stream: %s", line)
		}
	}
	// Nodes are seeded before the daemon starts and never written by a test: on the list
	// path they arrive in a list, on the watch-list path as the stream's ADDED events.
	for _, c := range fleet.Clusters {
		objects := metric("fleetcache_objects", c.Name, "nodes")
		added := metric("fleetcache_events_total", c.Name, "nodes", "type", "ADDED")
		if objects != float64(len(testfleet.PlanFor(c.Name, c.Index, testfleet.SeedOptions{}).Nodes)) {
			t.Errorf("%s: %v nodes cached, want the %d seeded", c.Name, objects, len(testfleet.PlanFor(c.Name, c.Index, testfleet.SeedOptions{}).Nodes))
		}
		if c == old && added != 0 {
			t.Errorf("%s (watch-list off): %v ADDED node events, want 0: the nodes came by a list", c.Name, added)
		}
		if c != old && added < objects {
			t.Errorf("%s (watch-list on): %v ADDED node events for %v nodes: want the watch-list stream's initial events", c.Name, added, objects)
		}
	}
}

// etcdRange reads one key from an etcd through its JSON gateway: how many keys matched,
// the key's mod revision and the etcd's current revision.
func etcdRange(t testing.TB, port int, key string) (count int, modRevision, revision int64) {
	t.Helper()
	req, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(key))})
	resp, err := http.Post("http://127.0.0.1:"+strconv.Itoa(port)+"/v3/kv/range", "application/json", bytes.NewReader(req))
	if err != nil {
		t.Fatalf("etcd :%d: %v", port, err)
	}
	defer resp.Body.Close()
	var out struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
		Count string `json:"count"`
		Kvs   []struct {
			ModRevision string `json:"mod_revision"`
		} `json:"kvs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("etcd :%d range %s: %s %v", port, key, resp.Status, err)
	}
	count, _ = strconv.Atoi(out.Count)
	revision, _ = strconv.ParseInt(out.Header.Revision, 10, 64)
	if len(out.Kvs) > 0 {
		modRevision, _ = strconv.ParseInt(out.Kvs[0].ModRevision, 10, 64)
	}
	return count, modRevision, revision
}

// TestConfigMapsLiveOnTheSecondEtcd: in the split cluster a ConfigMap is written to the
// second etcd only, its resourceVersion is that etcd's revision (a sequence apart from the
// main etcd's, which keeps a Secret written beside it), and fleetcache caches it at that
// resourceVersion.
func TestConfigMapsLiveOnTheSecondEtcd(t *testing.T) {
	d := startDaemon(t)
	c := splitCluster(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.AdminConfig())
	name := fmt.Sprintf("where-am-i-%d", time.Now().UnixNano())
	cm, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().ConfigMaps("default").Delete(ctx, name, metav1.DeleteOptions{})
		_ = cs.CoreV1().Secrets("default").Delete(ctx, name, metav1.DeleteOptions{})
	})
	cmKey, secretKey := "/registry/configmaps/default/"+name, "/registry/secrets/default/"+name

	n, mod, secondRev := etcdRange(t, c.ConfigMapsEtcdPort, cmKey)
	if n != 1 || strconv.FormatInt(mod, 10) != cm.ResourceVersion {
		t.Errorf("second etcd: %d keys %s at revision %d; want 1, at the ConfigMap's resourceVersion %s", n, cmKey, mod, cm.ResourceVersion)
	}
	if n, _, _ := etcdRange(t, c.EtcdPort, cmKey); n != 0 {
		t.Errorf("main etcd holds %s too", cmKey)
	}
	n, mod, mainRev := etcdRange(t, c.EtcdPort, secretKey)
	if n != 1 || strconv.FormatInt(mod, 10) != secret.ResourceVersion {
		t.Errorf("main etcd: %d keys %s at revision %d; want 1, at the Secret's resourceVersion %s", n, secretKey, mod, secret.ResourceVersion)
	}
	if n, _, _ := etcdRange(t, c.ConfigMapsEtcdPort, secretKey); n != 0 {
		t.Errorf("second etcd holds %s too", secretKey)
	}
	if mainRev == secondRev {
		t.Errorf("both etcds are at revision %d: their sequences should differ", mainRev)
	}
	t.Logf("%s: ConfigMap at revision %s of the second etcd (now %d), Secret at %s of the main one (now %d)", c.Name, cm.ResourceVersion, secondRev, secret.ResourceVersion, mainRev)

	waitFor(t, 30*time.Second, "fleetcache holds the ConfigMap at its resourceVersion", func() (bool, string) {
		var obj struct {
			Object struct {
				Metadata metav1.ObjectMeta `json:"metadata"`
			} `json:"object"`
		}
		code := d.getJSON(t, "/api/v1/objects/"+c.Name+"/configmaps/default/"+name, nil, &obj)
		return code == http.StatusOK && obj.Object.Metadata.ResourceVersion == cm.ResourceVersion,
			fmt.Sprintf("status %d, resourceVersion %q, want %s", code, obj.Object.Metadata.ResourceVersion, cm.ResourceVersion)
	})
}

// TestOnlyConfigMapsFailWithoutTheirEtcd: with the second etcd killed, the split cluster
// still serves every other resource and fails ConfigMap reads; fleetcache stops calling its
// ConfigMaps current (the data may be stale) while the other clusters stay Synced, and all
// recovers once that etcd is back.
func TestOnlyConfigMapsFailWithoutTheirEtcd(t *testing.T) {
	d := startDaemon(t)
	c := splitCluster(t)
	ctx := context.Background()
	reader := c.ReaderConfig()
	reader.Timeout = 5 * time.Second
	cs := kubernetes.NewForConfigOrDie(reader)
	if _, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("configmaps before the fault: %v", err)
	}
	if err := c.KillConfigMapsEtcd(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	restart := func() {
		if restarted {
			return
		}
		restarted = true
		if err := c.StartConfigMapsEtcd(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(restart)

	waitFor(t, 60*time.Second, "ConfigMap reads fail in "+c.Name, func() (bool, string) {
		_, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
		return err != nil, "a ConfigMap list still works"
	})
	for _, list := range []func() error{
		func() error { _, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); return err },
		func() error { _, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); return err },
		func() error { _, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); return err },
	} {
		if err := list(); err != nil {
			t.Errorf("%s without its ConfigMaps' etcd: a list of another resource failed: %v", c.Name, err)
		}
	}
	waitFor(t, 60*time.Second, "fleetcache stops calling "+c.Name+"'s ConfigMaps Synced", func() (bool, string) {
		r, ok := resourceStatus(statuses(t, d)[c.Name], "configmaps")
		return ok && r.Phase != clusters.PhaseSynced, fmt.Sprintf("configmaps: present %v, phase %s", ok, r.Phase)
	})
	st := statuses(t, d)
	for _, other := range fleet.Clusters {
		if other != c && st[other.Name].Phase != clusters.PhaseSynced {
			t.Errorf("%s is %s (%s) while only %s's ConfigMaps etcd is down", other.Name, st[other.Name].Phase, st[other.Name].Message, c.Name)
		}
	}
	var phases []string
	for _, r := range st[c.Name].Resources {
		phases = append(phases, fmt.Sprintf("%s=%s/%s", r.Resource, r.Phase, r.Reason))
	}
	t.Logf("%s without its ConfigMaps' etcd: cluster %s (%s: %s); %s", c.Name, st[c.Name].Phase, st[c.Name].Reason, st[c.Name].Message, strings.Join(phases, " "))

	restart()
	waitFor(t, 60*time.Second, c.Name+"'s ConfigMaps readable again", func() (bool, string) {
		_, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
		return err == nil, fmt.Sprint(err)
	})
	waitFor(t, 60*time.Second, "fleetcache has "+c.Name+" Synced again, as kubectl lists its ConfigMaps", func() (bool, string) {
		s := statuses(t, d)[c.Name]
		r, _ := resourceStatus(s, "configmaps")
		want := countIn(kubectlSet(t, "configmaps", "-A"), c.Name)
		return s.Phase == clusters.PhaseSynced && r.Objects == want, fmt.Sprintf("cluster %s (%s), configmaps %s with %d objects, kubectl %d", s.Phase, s.Message, r.Phase, r.Objects, want)
	})
}
