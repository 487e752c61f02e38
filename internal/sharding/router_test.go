package sharding

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
)

// fakeReplica answers /api/v1/count and /api/v1/objects (framing=lines) for the clusters
// it caches, as the local API does: ordered by cluster, namespace and name, honoring
// only, after and limit, and cutting pages at cut items (the response cap).
type fakeReplica struct {
	objects map[string][]string // cluster -> sorted namespace/name
	cut     int
}

func (f *fakeReplica) selected(q url.Values) []string {
	var out []string
	for _, c := range strings.Split(q.Get("only"), ",") {
		if _, ok := f.objects[c]; ok {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

func (f *fakeReplica) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("local") != "true" {
		http.Error(w, "a router must ask with local=true", http.StatusBadRequest)
		return
	}
	cs := f.selected(q)
	var fresh []aggregator.Freshness
	for _, c := range cs {
		fresh = append(fresh, aggregator.Freshness{Cluster: c, Phase: clusters.PhaseSynced, ResourcePhase: clusters.PhaseSynced})
	}
	switch r.URL.Path {
	case "/api/v1/count":
		var groups []aggregator.Group
		total := 0
		for _, c := range cs {
			groups = append(groups, aggregator.Group{Values: []string{c}, Count: len(f.objects[c])})
			total += len(f.objects[c])
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Count", "resource": map[string]string{"name": "pods"}, "groupBy": []string{"cluster"}, "groups": groups, "total": total, "clusters": fresh})
	case "/api/v1/objects":
		limit, _ := strconv.Atoi(q.Get("limit"))
		afterCluster, afterKey, _ := strings.Cut(q.Get("after"), "/")
		head, _ := json.Marshal(map[string]any{"kind": "ObjectList", "resource": map[string]string{"name": "pods"}, "clusters": fresh, "partial": false})
		_, _ = w.Write(append(head, '\n'))
		n, cont := 0, ""
	scan:
		for _, c := range cs {
			if c < afterCluster {
				continue
			}
			for _, key := range f.objects[c] {
				if c == afterCluster && key <= afterKey {
					continue
				}
				if n == limit || (f.cut > 0 && n == f.cut) {
					cont = "more"
					break scan
				}
				ns, name, _ := strings.Cut(key, "/")
				fmt.Fprintf(w, `{"cluster":%q,"object":{"metadata":{"name":%q,"namespace":%q}}}`+"\n", c, name, ns)
				n++
			}
		}
		fmt.Fprintf(w, `{"continue":%q}`+"\n", cont)
	default:
		http.NotFound(w, r)
	}
}

// routerFleet is a router on replica "a" with peers "b" and "c", over clusters c00..c11
// holding 0, 1, 2, ... 11 objects in two namespaces.
func routerFleet(t *testing.T, cut int) (*Router, http.Handler, map[string]*httptest.Server, []string) {
	t.Helper()
	var names []string
	objects := map[string][]string{}
	var want []string
	for i := range 12 {
		c := fmt.Sprintf("c%02d", i)
		names = append(names, c)
		for j := range i {
			key := fmt.Sprintf("ns%d/o%03d", j%2, j)
			objects[c] = append(objects[c], key)
		}
		sort.Strings(objects[c])
		for _, k := range objects[c] {
			want = append(want, c+"/"+k)
		}
	}
	m, err := New(Options{Client: fake.NewClientset(), Namespace: "ns", Identity: "a", Address: "http://a", Key: testKey, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]*httptest.Server{}
	var members []Member
	for _, id := range []string{"b", "c"} {
		servers[id] = httptest.NewServer(&fakeReplica{objects: map[string][]string{}, cut: cut})
		t.Cleanup(servers[id].Close)
		members = append(members, Member{Identity: id, Address: servers[id].URL})
	}
	local := &fakeReplica{objects: map[string][]string{}, cut: cut}
	members = append(members, Member{Identity: "a", Address: "http://a"})
	sort.Slice(members, func(i, j int) bool { return members[i].Identity < members[j].Identity })
	for _, c := range names {
		owner := Owners(c, members, 1)[0].Identity
		fr := local
		if owner != "a" {
			fr = servers[owner].Config.Handler.(*fakeReplica)
		}
		fr.objects[c] = objects[c]
	}
	m.members, m.synced, m.lastRenewed = members, true, time.Now()
	src := &Source{Inner: staticSource(names), Owner: m}
	if _, err := src.Targets(); err != nil {
		t.Fatal(err)
	}
	rt := &Router{Source: src}
	return rt, rt.Wrap(local), servers, want
}

func TestRoutedPagesReturnEveryObjectOnceInOrder(t *testing.T) {
	for _, cut := range []int{0, 3} { // 3: replicas cut pages short, as at the response cap
		_, h, _, want := routerFleet(t, cut)
		for _, limit := range []int{1, 2, 5, 8, 50, 500} {
			got, pages := pageThrough(t, h, url.Values{"resource": {"pods"}, "limit": {strconv.Itoa(limit)}})
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("cut %d, limit %d: %d objects in %d pages\n got  %v\n want %v", cut, limit, len(got), pages, got, want)
			}
		}
	}
}

func TestRoutedCountsAddUp(t *testing.T) {
	_, h, _, want := routerFleet(t, 0)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/count?resource=pods&groupBy=cluster", nil))
	var c countAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &c); err != nil {
		t.Fatal(err, rec.Body.String())
	}
	if c.Total != len(want) || len(c.Groups) != 12 || c.Partial {
		t.Errorf("count %+v, want %d objects in 12 groups", c, len(want))
	}
	for _, f := range c.Clusters {
		if f.Replica == "" {
			t.Errorf("%s: no replica named", f.Cluster)
		}
	}
}

func TestADeadReplicasClustersArePartialNotMissing(t *testing.T) {
	rt, h, servers, want := routerFleet(t, 0)
	servers["b"].Close()
	got, _ := pageThrough(t, h, url.Values{"resource": {"pods"}, "limit": {"5000"}})
	owned := map[string]string{}
	for _, c := range rt.Source.All() {
		owned[c] = rt.Source.Owner.Owners(c)[0].Identity
	}
	var wantLive []string
	for _, k := range want {
		if c, _, _ := strings.Cut(k, "/"); owned[c] != "b" {
			wantLive = append(wantLive, k)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(wantLive) {
		t.Errorf("with b dead: %v\nwant the others' %v", got, wantLive)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/objects?resource=pods&limit=5000", nil))
	var page struct {
		Clusters []aggregator.Freshness `json:"clusters"`
		Partial  bool                   `json:"partial"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &page)
	if !page.Partial || len(page.Clusters) != 12 {
		t.Fatalf("partial %v with %d clusters, want partial with all 12", page.Partial, len(page.Clusters))
	}
	for _, f := range page.Clusters {
		dead := owned[f.Cluster] == "b"
		if dead != (f.Reason == "ReplicaUnavailable") || f.Replica != owned[f.Cluster] {
			t.Errorf("%s (owner %s): %+v", f.Cluster, owned[f.Cluster], f)
		}
	}
}

// pageThrough follows continue tokens and returns "cluster/namespace/name" per item.
func pageThrough(t *testing.T, h http.Handler, q url.Values) ([]string, int) {
	t.Helper()
	var out []string
	for pages := 1; pages < 1000; pages++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/objects?"+q.Encode(), nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("HTTP %d: %s", rec.Code, rec.Body.String())
		}
		var p struct {
			Items []struct {
				Cluster string `json:"cluster"`
				Object  struct {
					Metadata struct{ Name, Namespace string } `json:"metadata"`
				} `json:"object"`
			} `json:"items"`
			Continue string `json:"continue"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatal(err, rec.Body.String())
		}
		for _, it := range p.Items {
			out = append(out, it.Cluster+"/"+it.Object.Metadata.Namespace+"/"+it.Object.Metadata.Name)
		}
		if p.Continue == "" {
			return out, pages
		}
		q.Set("continue", p.Continue)
	}
	t.Fatal("more than 1000 pages")
	return nil, 0
}

type staticSource []string

func (s staticSource) Targets() ([]clusters.Target, error) {
	var out []clusters.Target
	for _, n := range s {
		out = append(out, clusters.Target{Name: n})
	}
	return out, nil
}

func TestOnlyResourceRequestsOnFleetAreWarnedAbout(t *testing.T) {
	for path, want := range map[string]bool{
		"/api": false, "/api/v1": false, "/apis": false, "/apis/apps/v1": false, "/version": false, "/openapi/v3": false,
		"/api/v1/pods": true, "/api/v1/namespaces/a/configmaps": true, "/apis/apps/v1/deployments": true,
		"/apis/example.com/v1/namespaces/x/widgets/w": true,
	} {
		if got := resourceRequest(path); got != want {
			t.Errorf("resourceRequest(%q) = %v, want %v", path, got, want)
		}
	}
}

// TestJoiningIsAChange: a replica whose own Lease is written but whose peers' Leases are
// not read yet owns nothing; when they are read it must be told (OnChange), even if the
// members it sees stay the same, or it would go on owning nothing.
func TestJoiningIsAChange(t *testing.T) {
	calls := 0
	m, err := New(Options{Client: fake.NewClientset(), Namespace: "ns", Identity: "a", Address: "http://a", Key: testKey, OnChange: func() { calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	m.lastRenewed = time.Now()
	m.evaluate()
	if m.Joined() || m.Owns("c1") || calls != 1 {
		t.Fatalf("before the peers' Leases are read: joined %v, owns %v, %d changes", m.Joined(), m.Owns("c1"), calls)
	}
	m.synced = true
	m.evaluate()
	if !m.Joined() || !m.Owns("c1") || calls != 2 || m.Stats().Changes != 2 {
		t.Fatalf("after: joined %v, owns %v, %d OnChange calls, %d changes; want joined, owning, 2 and 2", m.Joined(), m.Owns("c1"), calls, m.Stats().Changes)
	}
}
