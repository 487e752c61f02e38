package metrics

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/fleetcache/fleetcache/clusters"
)

// -update rewrites testdata/scrape.golden from the collector's output; review the diff.
var update = flag.Bool("update", false, "rewrite testdata/scrape.golden")

type fakeSource []clusters.ClusterStatus

func (s fakeSource) Status() []clusters.ClusterStatus { return s }

// Summaries are the statuses' cluster-level parts, as the fleet reports them.
func (s fakeSource) Summaries() []clusters.ClusterSummary {
	out := make([]clusters.ClusterSummary, len(s))
	for i, cs := range s {
		out[i] = cs.Summary()
	}
	return out
}

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }
func f64(v float64) *float64        { return &v }

// fleet is two clusters: alpha is Synced and caches pods, configmaps in two namespaces (one
// informer synced and proven, the other still syncing) and a CRD it does not serve; beta
// is Unreachable, its pods informer failing its initial list.
func fleet() fakeSource {
	synced := clusters.Condition{Phase: clusters.PhaseSynced}
	return fakeSource{
		{
			Condition: synced, Name: "alpha", Context: "ctx-alpha", Server: "https://alpha.example:6443", Version: "v1.31.2",
			InitialSyncTime: at(-time.Minute), LastProbeTime: at(-time.Second), ConnectionResets: 1, Probes: 42,
			Resources: []clusters.ResourceStatus{
				{
					Condition: synced, Resource: "pods", Kind: "Pod", Objects: 3, WatchConnected: true,
					LastListTime: at(-time.Minute), LastEventTime: at(-2 * time.Second), StalenessSeconds: f64(1.5), ResourceVersionLag: 2,
					Counters: clusters.Counters{
						Lists: 2, ListErrors: 1, WatchStarts: 3, Events: map[string]uint64{"ADDED": 3, "MODIFIED": 5, "BOOKMARK": 2},
						ListDuration:     clusters.Histogram{Buckets: map[float64]uint64{0.1: 1, 1: 2}, Count: 2, Sum: 0.6},
						SyncLag:          clusters.Histogram{Buckets: map[float64]uint64{0.5: 4, 2: 5}, Count: 5, Sum: 3},
						LastBookmarkTime: at(-30 * time.Second), InitialSyncDuration: 700 * time.Millisecond,
						ResourceVersionLag: 2, Probed: true,
					},
				},
				{
					Condition: synced, Resource: "configmaps", Namespace: "payments", Kind: "ConfigMap", Objects: 4, WatchConnected: true,
					LastListTime: at(-50 * time.Second), LastEventTime: at(-3 * time.Second), StalenessSeconds: f64(2),
					Counters: clusters.Counters{
						Lists: 1, WatchStarts: 1, WatchListFallbacks: 1, Events: map[string]uint64{"ADDED": 4, "DELETED": 1},
						ListDuration:     clusters.Histogram{Buckets: map[float64]uint64{0.1: 1, 1: 1}, Count: 1, Sum: 0.05},
						SyncLag:          clusters.Histogram{Buckets: map[float64]uint64{0.5: 1, 2: 2}, Count: 2, Sum: 1.2},
						LastBookmarkTime: at(-10 * time.Second), InitialSyncDuration: 400 * time.Millisecond,
						ResourceVersionLag: 3, Probed: true,
					},
				},
				{
					Condition: clusters.Condition{Phase: clusters.PhaseSyncing}, Resource: "configmaps", Namespace: "search", Kind: "ConfigMap",
					Counters: clusters.Counters{Lists: 2, ListErrors: 2, WatchListFallbacks: 2, Events: map[string]uint64{}, ListDuration: clusters.Histogram{Buckets: map[float64]uint64{0.1: 0, 1: 0}}},
				},
				{Condition: clusters.Condition{Phase: clusters.PhaseNotServed, Reason: "NotFound"}, Resource: "widgets.example.com", Kind: "Widget"},
			},
		},
		{
			Condition: clusters.Condition{Phase: clusters.PhaseUnreachable, Reason: "ConnectionRefused"}, Name: "beta", Context: "ctx-beta", Server: "https://beta.example:6443",
			Resources: []clusters.ResourceStatus{{
				Condition: clusters.Condition{Phase: clusters.PhaseUnreachable, Reason: "ConnectionRefused"}, Resource: "pods", Kind: "Pod",
				Counters: clusters.Counters{Lists: 4, ListErrors: 4},
			}},
		},
	}
}

func TestCollectorGoldenScrape(t *testing.T) {
	c := NewCollector(fleet())
	golden := filepath.Join("testdata", "scrape.golden")
	if *update {
		// Not testutil.CollectAndFormat: without metric names it formats none.
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		enc := expfmt.NewEncoder(&out, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(c, bytes.NewReader(want)); err != nil {
		t.Errorf("scrape differs from %s (run with -update and review the diff if the change is intended):\n%v", golden, err)
	}
}

func TestCollectorPassesPromlint(t *testing.T) {
	problems, err := testutil.CollectAndLint(NewCollector(fleet()))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// scrape gathers the collector through a pedantic registry (which also checks every
// metric against its Desc) and returns the series as "name{k=v,...}" -> value.
func scrape(t *testing.T, src StatusSource, opts ...Options) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(src, opts...))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			key := mf.GetName() + "{" + strings.Join(ls, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
				out[key+"_sum"] = m.GetHistogram().GetSampleSum()
				for _, b := range m.GetHistogram().GetBucket() {
					out[key+"_bucket{le="+strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)+"}"] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return out
}

func TestCollectorContent(t *testing.T) {
	got := scrape(t, fleet())
	want := map[string]float64{
		`fleetcache_cluster_info{cluster=alpha,server=https://alpha.example:6443,version=v1.31.2}`: 1,
		`fleetcache_cluster_info{cluster=beta,server=https://beta.example:6443,version=}`:          1,
		`fleetcache_cluster_synced{cluster=alpha}`:                                                 1,
		`fleetcache_cluster_synced{cluster=beta}`:                                                  0,
		`fleetcache_cluster_phase{cluster=beta,phase=Unreachable}`:                                 1,
		`fleetcache_cluster_phase{cluster=beta,phase=Synced}`:                                      0,
		`fleetcache_cluster_probes_total{cluster=alpha}`:                                           42,
		`fleetcache_cluster_connection_resets_total{cluster=alpha}`:                                1,
		`fleetcache_cluster_last_probe_timestamp_seconds{cluster=alpha}`:                           float64(t0.Unix() - 1),
		`fleetcache_initial_sync_timestamp_seconds{cluster=alpha}`:                                 float64(t0.Unix() - 60),

		// pods: one informer, proven.
		`fleetcache_objects{cluster=alpha,resource=pods}`:                         3,
		`fleetcache_resource_synced{cluster=alpha,resource=pods}`:                 1,
		`fleetcache_staleness_seconds{cluster=alpha,resource=pods}`:               1.5,
		`fleetcache_resource_version_lag{cluster=alpha,resource=pods}`:            2,
		`fleetcache_events_total{cluster=alpha,resource=pods,type=MODIFIED}`:      5,
		`fleetcache_events_total{cluster=alpha,resource=pods,type=ERROR}`:         0,
		`fleetcache_initial_sync_duration_seconds{cluster=alpha,resource=pods}`:   0.7,
		`fleetcache_last_bookmark_timestamp_seconds{cluster=alpha,resource=pods}`: float64(t0.Unix() - 30),
		`fleetcache_last_event_timestamp_seconds{cluster=alpha,resource=pods}`:    float64(t0.Unix() - 2),
		`fleetcache_list_duration_seconds{cluster=alpha,resource=pods}_count`:     2,
		`fleetcache_sync_lag_seconds{cluster=alpha,resource=pods}_sum`:            3,

		// configmaps: two namespaced informers summed into one series set.
		`fleetcache_objects{cluster=alpha,resource=configmaps}`:                       4,
		`fleetcache_resource_synced{cluster=alpha,resource=configmaps}`:               1,
		`fleetcache_watch_connected{cluster=alpha,resource=configmaps}`:               1,
		`fleetcache_resource_phase{cluster=alpha,phase=Synced,resource=configmaps}`:   1,
		`fleetcache_resource_phase{cluster=alpha,phase=Syncing,resource=configmaps}`:  1,
		`fleetcache_lists_total{cluster=alpha,resource=configmaps}`:                   3,
		`fleetcache_list_errors_total{cluster=alpha,resource=configmaps}`:             2,
		`fleetcache_watch_list_fallbacks_total{cluster=alpha,resource=configmaps}`:    3,
		`fleetcache_watch_list_fallbacks_total{cluster=alpha,resource=pods}`:          0,
		`fleetcache_events_total{cluster=alpha,resource=configmaps,type=ADDED}`:       4,
		`fleetcache_list_duration_seconds{cluster=alpha,resource=configmaps}_count`:   1,
		`fleetcache_resource_version_lag{cluster=alpha,resource=configmaps}`:          3,
		`fleetcache_last_event_timestamp_seconds{cluster=alpha,resource=configmaps}`:  float64(t0.Unix() - 3),
		`fleetcache_initial_sync_duration_seconds{cluster=alpha,resource=configmaps}`: 0.4,

		// widgets: not served; state gauges only.
		`fleetcache_objects{cluster=alpha,resource=widgets.example.com}`:                        0,
		`fleetcache_resource_phase{cluster=alpha,phase=NotServed,resource=widgets.example.com}`: 1,
		`fleetcache_resource_synced{cluster=alpha,resource=widgets.example.com}`:                0,

		// beta: failing initial list.
		`fleetcache_lists_total{cluster=beta,resource=pods}`:                      4,
		`fleetcache_list_errors_total{cluster=beta,resource=pods}`:                4,
		`fleetcache_resource_phase{cluster=beta,phase=Unreachable,resource=pods}`: 1,
	}
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("missing series %s", k)
		case g != v:
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	absent := []string{
		// Some configmaps informer has no staleness bound yet: no bound for the resource.
		`fleetcache_staleness_seconds{cluster=alpha,resource=configmaps}`,
		`fleetcache_staleness_seconds{cluster=beta,resource=pods}`,
		`fleetcache_staleness_seconds{cluster=alpha,resource=widgets.example.com}`,
		`fleetcache_resource_version_lag{cluster=beta,resource=pods}`,
		`fleetcache_cluster_last_probe_timestamp_seconds{cluster=beta}`,
		`fleetcache_initial_sync_timestamp_seconds{cluster=beta}`,
		`fleetcache_initial_sync_duration_seconds{cluster=beta,resource=pods}`,
		`fleetcache_last_event_timestamp_seconds{cluster=beta,resource=pods}`,
	}
	for _, k := range absent {
		if _, ok := got[k]; ok {
			t.Errorf("series %s present, want absent", k)
		}
	}
	// A resource the cluster does not serve has no informer: no call counters, times or
	// histograms at all.
	for k := range got {
		if strings.Contains(k, "resource=widgets.example.com") &&
			!strings.HasPrefix(k, "fleetcache_objects{") && !strings.HasPrefix(k, "fleetcache_resource_phase{") &&
			!strings.HasPrefix(k, "fleetcache_resource_synced{") && !strings.HasPrefix(k, "fleetcache_watch_connected{") {
			t.Errorf("NotServed resource has series %s", k)
		}
	}
	// One resource_phase series per phase: a state set.
	n := 0
	for k := range got {
		if strings.HasPrefix(k, "fleetcache_resource_phase{") && strings.Contains(k, "resource=pods") && strings.Contains(k, "cluster=alpha") {
			n++
		}
	}
	if n != len(clusters.Phases) {
		t.Errorf("alpha/pods has %d resource_phase series, want %d", n, len(clusters.Phases))
	}
	// Merged histogram: the configmaps informers' buckets add up.
	if g := got[`fleetcache_sync_lag_seconds{cluster=alpha,resource=configmaps}_count`]; g != 2 {
		t.Errorf("configmaps sync_lag count = %v, want 2", g)
	}
}

func TestCollectorForgetsRemovedClusters(t *testing.T) {
	src := fleet()
	if got := scrape(t, src[:1]); len(got) == 0 {
		t.Fatal("no series")
	} else {
		for k := range got {
			if strings.Contains(k, "cluster=beta") {
				t.Errorf("series %s of a cluster the source no longer lists", k)
			}
		}
	}
}

// TestClusterSeriesOnly: with per-resource series dropped, no series carries a resource
// label, each cluster keeps its cluster-level series (objects and staleness summed over
// its resources), and the budget's scale is exported.
func TestClusterSeriesOnly(t *testing.T) {
	budget := clusters.NewRequestBudget(100)
	all := scrape(t, fleet())
	got := scrape(t, summariesOnly{t, fleet()}, Options{ClusterSeriesOnly: true, Budget: budget})
	perCluster := map[string]int{}
	for k := range got {
		if strings.Contains(k, "resource=") {
			t.Errorf("per-resource series kept: %s", k)
		}
		if i := strings.Index(k, "cluster="); i >= 0 {
			name := strings.FieldsFunc(k[i+len("cluster="):], func(r rune) bool { return r == ',' || r == '}' })[0]
			perCluster[name]++
		}
	}
	if got[`fleetcache_cluster_objects{cluster=alpha}`] != 7 {
		t.Errorf("alpha objects %v, want 7 (3 pods + 4 configmaps)", got[`fleetcache_cluster_objects{cluster=alpha}`])
	}
	if v, ok := got[`fleetcache_freshness_interval_scale{}`]; !ok || v != 1 {
		t.Errorf("interval scale %v (present %v), want 1", v, ok)
	}
	if n := perCluster["alpha"]; n == 0 || n > 20 {
		t.Errorf("alpha has %d series, want at most 20 (cluster-level only)", n)
	}
	// The same cluster-level series, with the same values, as with per-resource series.
	for k, v := range got {
		if k == `fleetcache_freshness_interval_scale{}` {
			continue
		}
		if w, ok := all[k]; !ok || w != v {
			t.Errorf("%s = %v; with per-resource series %v (present %v)", k, v, w, ok)
		}
	}
	for k := range all {
		if _, ok := got[k]; !ok && !strings.Contains(k, "resource=") {
			t.Errorf("cluster-level series %s missing", k)
		}
	}
	if len(all) <= 2*len(got) {
		t.Errorf("dropping per-resource series left %d of %d", len(got), len(all))
	}
	t.Logf("series: %d with per-resource, %d cluster-level only (alpha: %d)", len(all), len(got), perCluster["alpha"])
}

// summariesOnly is a source whose full status must not be read: a scrape of cluster-level
// series builds no resource status.
type summariesOnly struct {
	t *testing.T
	fakeSource
}

func (s summariesOnly) Status() []clusters.ClusterStatus {
	s.t.Error("the cluster-level scrape read every resource's status")
	return s.fakeSource.Status()
}
