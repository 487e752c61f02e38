package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

// scrape reads /metrics into metric families.
func (d *daemon) scrape(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(d.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value returns the sample of a gauge or counter with exactly these labels.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	m := find(fams, name, labels)
	if m == nil {
		return 0, false
	}
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	}
	return 0, false
}

func find(fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		for k, v := range labels {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

// waitFor fails the test unless cond holds within the timeout.
var waitFor = testfleet.Eventually

func TestObjectMetricsEqualKubectl(t *testing.T) {
	d := startDaemon(t)
	for _, c := range fleet.Clusters {
		for _, res := range e2eResources {
			want := len(kubectlSet(t, res, "-A"))
			waitFor(t, 15*time.Second, c.Name+"/"+res, func() (bool, string) {
				got, ok := value(d.scrape(t), "fleetcache_objects", map[string]string{"cluster": c.Name, "resource": res})
				want = countIn(kubectlSet(t, res, "-A"), c.Name)
				return ok && int(got) == want, fmt.Sprintf("fleetcache_objects %v (present %v), kubectl %d", got, ok, want)
			})
		}
	}
}

func countIn(keys []string, cluster string) int {
	n := 0
	for _, k := range keys {
		if strings.HasPrefix(k, cluster+"/") {
			n++
		}
	}
	return n
}

func TestEventsTotalCountsExactlyTheEventsCaused(t *testing.T) {
	d := startDaemon(t)
	c := fleet.Clusters[2]
	cs := kubernetes.NewForConfigOrDie(c.AdminConfig())
	ctx := context.Background()
	read := func() map[string]float64 {
		fams := d.scrape(t)
		out := map[string]float64{}
		for _, typ := range []string{"ADDED", "MODIFIED", "DELETED"} {
			out[typ], _ = value(fams, "fleetcache_events_total", map[string]string{"cluster": c.Name, "resource": "configmaps", "type": typ})
		}
		return out
	}
	before := read()
	const n = 3
	for i := range n {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("counted-%d", i), Namespace: "default"}, Data: map[string]string{"v": "1"}}
		created, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Data["v"] = "2"
		if _, err := cs.CoreV1().ConfigMaps("default").Update(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := cs.CoreV1().ConfigMaps("default").Delete(ctx, cm.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	delta := func() map[string]float64 {
		now := read()
		return map[string]float64{"ADDED": now["ADDED"] - before["ADDED"], "MODIFIED": now["MODIFIED"] - before["MODIFIED"], "DELETED": now["DELETED"] - before["DELETED"]}
	}
	waitFor(t, 15*time.Second, "events counted", func() (bool, string) {
		d := delta()
		return d["DELETED"] >= n, fmt.Sprint(d)
	})
	if got := delta(); got["ADDED"] != n || got["MODIFIED"] != n || got["DELETED"] != n {
		t.Errorf("events_total grew by %v, want %d of each", got, n)
	}
}

func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("FLEETCACHE_REQUIRE_PROMTOOL") != "" {
			t.Fatal("promtool not found (install Debian's prometheus package)")
		}
		t.Skip("promtool not installed")
	}
	return path
}

func TestPromtoolAcceptsMetrics(t *testing.T) {
	d := startDaemon(t)
	bin := promtool(t)
	resp, err := http.Get(d.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(body))
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

var metricName = regexp.MustCompile(`fleetcache_[a-z_]+`)

// TestDashboardAndRulesUseLiveMetrics checks that every metric named by the dashboard and
// the alert rules exists in a live scrape.
func TestDashboardAndRulesUseLiveMetrics(t *testing.T) {
	d := startDaemon(t)
	// Histograms and the lag gauges appear once events and probes have happened.
	waitFor(t, 20*time.Second, "probes and events", func() (bool, string) {
		fams := d.scrape(t)
		_, ok1 := fams["fleetcache_resource_version_lag"]
		_, ok2 := fams["fleetcache_last_bookmark_timestamp_seconds"]
		return ok1 && ok2, "resource_version_lag or last_bookmark missing"
	})
	fams := d.scrape(t)
	var exprs []string
	raw, err := os.ReadFile("../deploy/monitoring/fleetcache-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct{ Definition string } `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	raw, err = os.ReadFile("../deploy/monitoring/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Spec struct {
			Groups []struct {
				Rules []struct{ Expr string } `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Spec.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	if len(exprs) < 10 {
		t.Fatalf("only %d expressions found", len(exprs))
	}
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if f, ok := fams[strings.TrimSuffix(name, suffix)]; ok && f.GetType() == dto.MetricType_HISTOGRAM {
					base = strings.TrimSuffix(name, suffix)
				}
			}
			if _, ok := fams[base]; !ok {
				t.Errorf("%s (in %q) is not in a live scrape", name, e)
			}
		}
	}
}

func readyz(t testing.TB, d *daemon) (int, string) {
	resp, err := http.Get(d.url + "/readyz?verbose")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestStoppedClusterShowsInMetricsAndReadiness(t *testing.T) {
	d := startDaemon(t)
	victim := fleet.Clusters[1]
	if code, body := readyz(t, d); code != http.StatusOK {
		t.Fatalf("not ready before the fault: %s", body)
	}
	if err := victim.Stop(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = victim.Cont()
		waitFor(t, 30*time.Second, "ready again", func() (bool, string) {
			code, body := readyz(t, d)
			return code == http.StatusOK, body
		})
	}()
	// Probe interval 1s + request timeout 2s, well within 1s + 10s.
	waitFor(t, 11*time.Second, "metrics show the stopped cluster", func() (bool, string) {
		fams := d.scrape(t)
		synced, _ := value(fams, "fleetcache_cluster_synced", map[string]string{"cluster": victim.Name})
		unreachable, _ := value(fams, "fleetcache_cluster_phase", map[string]string{"cluster": victim.Name, "phase": "Unreachable"})
		return synced == 0 && unreachable == 1, fmt.Sprintf("synced %v unreachable %v", synced, unreachable)
	})
	fams := d.scrape(t)
	for _, c := range fleet.Clusters {
		if c == victim {
			continue
		}
		if v, _ := value(fams, "fleetcache_cluster_synced", map[string]string{"cluster": c.Name}); v != 1 {
			t.Errorf("healthy cluster %s shows synced=%v", c.Name, v)
		}
	}
	// The e2e daemon's policy is "atLeast 3 synced": one stopped cluster makes it unready.
	code, body := readyz(t, d)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]cluster "+victim.Name) || !strings.Contains(body, "atLeast") {
		t.Errorf("readyz: %d\n%s", code, body)
	}
}

func TestKillAndRestartCountsRelistsAndRecovers(t *testing.T) {
	d := startDaemon(t)
	victim := fleet.Clusters[1]
	counters := func() (lists, errors, relists, starts float64) {
		fams := d.scrape(t)
		l := map[string]string{"cluster": victim.Name, "resource": "pods"}
		lists, _ = value(fams, "fleetcache_lists_total", l)
		errors, _ = value(fams, "fleetcache_list_errors_total", l)
		relists, _ = value(fams, "fleetcache_relists_total", l)
		starts, _ = value(fams, "fleetcache_watch_starts_total", l)
		return
	}
	lists0, errs0, relists0, starts0 := counters()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "cluster seen down", func() (bool, string) {
		v, _ := value(d.scrape(t), "fleetcache_cluster_synced", map[string]string{"cluster": victim.Name})
		return v == 0, "still synced"
	})
	if err := victim.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "watch re-established", func() (bool, string) {
		_, _, _, starts := counters()
		v, _ := value(d.scrape(t), "fleetcache_cluster_synced", map[string]string{"cluster": victim.Name})
		return v == 1 && starts > starts0, fmt.Sprintf("synced %v, watch starts %v -> %v", v, starts0, starts)
	})
	lists, errs, relists, starts := counters()
	t.Logf("after kill and restart: %v successful lists, %v relists, %v failed lists, %v watch starts", (lists-lists0)-(errs-errs0), relists-relists0, errs-errs0, starts-starts0)
	// With its own etcd the cluster keeps its revisions across an apiserver restart, and
	// the informers resume their watches where they were. A restarted apiserver may answer
	// Forbidden until its RBAC cache is filled, and a loaded machine may time a list or a
	// watch out: each costs a relist, and is legitimate. A relist loop is not: every watch
	// must go back to renewing itself (every idleProofInterval, 5s) without relisting.
	watchesRenewWithoutRelisting(t, d, victim.Name, 3, 2*time.Minute)
	for _, res := range e2eResources {
		waitFor(t, 15*time.Second, res+" count back to kubectl's", func() (bool, string) {
			got, _ := value(d.scrape(t), "fleetcache_objects", map[string]string{"cluster": victim.Name, "resource": res})
			want := countIn(kubectlSet(t, res, "-A"), victim.Name)
			return int(got) == want, fmt.Sprintf("%v vs %d", got, want)
		})
	}
}

// watchesRenewWithoutRelisting waits until every watched resource of cluster has
// started its watch renewals times since it last relisted: its watches resume by
// themselves. A relist loop, however client-go's backoff paces it (up to a minute
// between lists, with no watch meanwhile), never gets there. It fails after timeout with
// each resource's relists and watch starts.
func watchesRenewWithoutRelisting(t *testing.T, d *daemon, cluster string, renewals int, timeout time.Duration) {
	t.Helper()
	type counts struct{ relists, starts float64 }
	read := func() map[string]counts {
		out := map[string]counts{}
		fams := d.scrape(t)
		for _, name := range []string{"fleetcache_relists_total", "fleetcache_watch_starts_total"} {
			for _, m := range fams[name].GetMetric() {
				labels := map[string]string{}
				for _, lp := range m.GetLabel() {
					labels[lp.GetName()] = lp.GetValue()
				}
				if labels["cluster"] != cluster {
					continue
				}
				c := out[labels["resource"]]
				if name == "fleetcache_relists_total" {
					c.relists = m.GetCounter().GetValue()
				} else {
					c.starts = m.GetCounter().GetValue()
				}
				out[labels["resource"]] = c
			}
		}
		return out
	}
	since := read() // per resource: its counts at its last relist
	for res, c := range since {
		if c.starts == 0 {
			delete(since, res) // never watched (not served there)
		}
	}
	relisted := map[string]int{}
	waitFor(t, timeout, fmt.Sprintf("every resource of %s renews its watch %d times without relisting", cluster, renewals), func() (bool, string) {
		now := read()
		var behind []string
		for res, base := range since {
			c := now[res]
			if c.relists != base.relists {
				relisted[res]++
				since[res] = c
				base = c
			}
			if c.starts-base.starts < float64(renewals) {
				behind = append(behind, fmt.Sprintf("%s (%v watch starts since its last relist; relisted %d times while waiting)", res, c.starts-base.starts, relisted[res]))
			}
		}
		sort.Strings(behind)
		return len(behind) == 0, strings.Join(behind, ", ")
	})
	t.Logf("every resource of %s renewed its watch %d times without relisting; relists while waiting: %v", cluster, renewals, relisted)
}

// TestKubeAPIRequestsAreCounted: requests to the Kubernetes API are in the HTTP metrics
// like the JSON API's.
func TestKubeAPIRequestsAreCounted(t *testing.T) {
	d := startDaemon(t)
	count := func() float64 {
		v, _ := value(d.scrape(t), "fleetcache_http_requests_total", map[string]string{"handler": "kubeapi-fleet", "method": "get", "code": "200"})
		return v
	}
	before := count()
	for range 3 {
		resp, err := http.Get(d.url + "/fleet/api/v1/namespaces")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// A request is counted once its handler returned, which may be just after the client
	// read the answer: wait for the third, then make sure no fourth comes.
	testfleet.Eventually(t, 10*time.Second, "three kubeapi-fleet requests counted", func() (bool, string) {
		got := count() - before
		return got >= 3, fmt.Sprintf("grew by %v", got)
	})
	if got := count() - before; got != 3 {
		t.Errorf("kubeapi-fleet requests grew by %v, want 3", got)
	}
}
