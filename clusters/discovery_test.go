package clusters

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDiscoveryFingerprint: the same answer has the same fingerprint; any change that
// resolving resources reads (a short name, a new version, a preferred version, a
// resource's scope) changes it.
func TestDiscoveryFingerprint(t *testing.T) {
	answer := func() ([]*metav1.APIGroup, []*metav1.APIResourceList) {
		groups := []*metav1.APIGroup{{
			Name:             "apps",
			Versions:         []metav1.GroupVersionForDiscovery{{GroupVersion: "apps/v1", Version: "v1"}},
			PreferredVersion: metav1.GroupVersionForDiscovery{GroupVersion: "apps/v1", Version: "v1"},
		}}
		lists := []*metav1.APIResourceList{{GroupVersion: "apps/v1", APIResources: []metav1.APIResource{{
			Name: "deployments", SingularName: "deployment", Namespaced: true, Kind: "Deployment",
			Verbs: []string{"list", "watch"}, ShortNames: []string{"deploy"},
		}}}}
		return groups, lists
	}
	base := discoveryFingerprint(answer())
	if again := discoveryFingerprint(answer()); again != base {
		t.Fatal("the same answer fingerprints differently")
	}
	// client-go hands groups, lists and resources out in map order: order is not a change.
	g, l := answer()
	g = append(g, &metav1.APIGroup{Name: "batch", PreferredVersion: metav1.GroupVersionForDiscovery{GroupVersion: "batch/v1"}})
	l[0].APIResources = append(l[0].APIResources, metav1.APIResource{Name: "replicasets", Kind: "ReplicaSet"})
	l = append(l, &metav1.APIResourceList{GroupVersion: "batch/v1", APIResources: []metav1.APIResource{{Name: "jobs", Kind: "Job"}}})
	reordered := discoveryFingerprint(
		[]*metav1.APIGroup{g[1], g[0]},
		[]*metav1.APIResourceList{l[1], {GroupVersion: "apps/v1", APIResources: []metav1.APIResource{l[0].APIResources[1], l[0].APIResources[0]}}})
	if reordered != discoveryFingerprint(g, l) {
		t.Error("the same answer in another order fingerprints differently")
	}
	changes := map[string]func(g []*metav1.APIGroup, l []*metav1.APIResourceList){
		"short name": func(g []*metav1.APIGroup, l []*metav1.APIResourceList) {
			l[0].APIResources[0].ShortNames = []string{"dp"}
		},
		"scope": func(g []*metav1.APIGroup, l []*metav1.APIResourceList) { l[0].APIResources[0].Namespaced = false },
		"preferred version": func(g []*metav1.APIGroup, l []*metav1.APIResourceList) {
			g[0].PreferredVersion.GroupVersion = "apps/v2"
		},
		"verbs": func(g []*metav1.APIGroup, l []*metav1.APIResourceList) { l[0].APIResources[0].Verbs = []string{"list"} },
		"a new resource": func(g []*metav1.APIGroup, l []*metav1.APIResourceList) {
			l[0].APIResources = append(l[0].APIResources, metav1.APIResource{Name: "replicasets", Kind: "ReplicaSet"})
		},
		"resource moved to another version": func(g []*metav1.APIGroup, l []*metav1.APIResourceList) {
			l[0].GroupVersion = "apps/v2"
		},
		// Moving a name from one list to the next must not look the same.
		"names regrouped": func(g []*metav1.APIGroup, l []*metav1.APIResourceList) {
			l[0].APIResources[0].Verbs, l[0].APIResources[0].ShortNames = []string{"list", "watch", "deploy"}, nil
		},
	}
	for name, change := range changes {
		g, l := answer()
		change(g, l)
		if discoveryFingerprint(g, l) == base {
			t.Errorf("%s: fingerprint unchanged", name)
		}
	}
}
