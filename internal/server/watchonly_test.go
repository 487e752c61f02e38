package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/request"
	"github.com/fleetcache/fleetcache/internal/sharding"
)

// startingFleet is the synced fleet with cluster-09 still syncing, loaded or not.
type startingFleet struct {
	*syncedFleet
	loaded bool
}

func (f *startingFleet) Loaded() bool { return f.loaded }
func (f *startingFleet) Freshness(cluster, resource string) (clusters.Freshness, bool) {
	if cluster == "cluster-09" {
		return clusters.Freshness{Phase: clusters.PhaseSyncing, ResourcePhase: clusters.PhaseSyncing}, true
	}
	return f.syncedFleet.Freshness(cluster, resource)
}

// podIndex holds a pod in each of the fleet's clusters, and reads their freshness from it.
func podIndex(t *testing.T, f *startingFleet) *aggregator.Index {
	c, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		t.Fatal(err)
	}
	ix := aggregator.New(f, aggregator.Options{})
	for i, name := range f.names {
		o, err := c.Compact(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pod", UID: types.UID(name), ResourceVersion: "1"}})
		if err != nil {
			t.Fatal(err)
		}
		ix.OnAdd(&clusters.InformerRef{Cluster: name, Resource: "pods", Kind: "Pod", APIVersion: "v1", Namespaced: true, Names: []string{"pods"}, ID: uint64(i + 1)}, o)
	}
	return ix
}

// group is a sharding group whose other replicas cache elsewhere-0 and elsewhere-1.
type group struct{ all []string }

func (g group) Status() sharding.Status { return sharding.Status{} }
func (g group) All() []string           { return g.all }

// A watch's only is how a sharding router asks a replica for some clusters: a cluster
// not in the configuration is bad input (400, and the message names it); one configured
// but not cached or not Synced here, or any before the configuration is read, is 503.
func TestWatchOnlyTellsUnknownFromNotHereYet(t *testing.T) {
	all := append(newSyncedFleet().names, "elsewhere-0", "elsewhere-1") // sorted, as sharding.Source.All
	for _, tc := range []struct {
		name     string
		loaded   bool
		sharding Sharding
		only     string
		want     int
	}{
		{"synced", true, nil, "cluster-00,cluster-01", http.StatusOK},
		{"unknown", true, nil, "nosuch", http.StatusBadRequest},
		{"unknown among synced", true, nil, "cluster-00,nosuch", http.StatusBadRequest},
		{"not synced yet", true, nil, "cluster-09", http.StatusServiceUnavailable},
		{"another replica's, unsharded", true, nil, "elsewhere-0", http.StatusBadRequest},
		{"another replica's", true, group{all}, "elsewhere-0", http.StatusServiceUnavailable},
		{"unknown, sharded", true, group{all}, "cluster-00,nosuch", http.StatusBadRequest},
		{"configuration not read yet", false, group{all}, "nosuch", http.StatusServiceUnavailable},
		{"configuration not read yet, unsharded", false, nil, "nosuch", http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &startingFleet{syncedFleet: newSyncedFleet(), loaded: tc.loaded}
			srv := httptest.NewServer(New(Options{Fleet: f, Index: podIndex(t, f), Sharding: tc.sharding}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/watch?local=true&resource=pods&initialEvents=true&only="+tc.only, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("only=%s: %d, want %d", tc.only, resp.StatusCode, tc.want)
			}
			if resp.StatusCode == http.StatusOK {
				return
			}
			var e request.APIError
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatal(err)
			}
			if tc.want == http.StatusBadRequest && (e.Reason != "BadRequest" || !strings.Contains(e.Message, `"only"`) || !strings.Contains(e.Message, `"nosuch"`) && !strings.Contains(e.Message, `"elsewhere-0"`)) {
				t.Errorf("only=%s: %+v, want a BadRequest naming the parameter and the cluster", tc.only, e)
			}
			if tc.want == http.StatusServiceUnavailable && e.Reason != "ServiceUnavailable" {
				t.Errorf("only=%s: %+v, want ServiceUnavailable", tc.only, e)
			}
		})
	}
}
