package kubeapi

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	"github.com/munnerz/goautoneg"
	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
)

// Discovery lists exactly the cached resources (of one cluster, on /clusters/{cluster}/:
// without those that cluster does not serve), so that discovery-driven clients (RESTMapper,
// dynamic informers, kubectl) never ask for anything else. Each resource has the verbs
// get, list and watch. /api and /apis answer aggregated discovery
// (apidiscovery.k8s.io/v2, what client-go and kubectl ask for first) or the legacy
// documents, as the Accept header asks.

// discoveryV2 is the media type of aggregated discovery, as client-go asks for it.
var discoveryV2 = schema.GroupVersionKind{Group: apidiscoveryv2.SchemeGroupVersion.Group, Version: apidiscoveryv2.SchemeGroupVersion.Version, Kind: "APIGroupDiscoveryList"}

// wantsAggregated reports whether the client prefers aggregated discovery.
func wantsAggregated(r *http.Request) bool {
	for _, a := range goautoneg.ParseAccept(r.Header.Get("Accept")) {
		if a.Params["as"] == "" {
			return false // a plain type comes first
		}
		if a.Type+"/"+a.SubType == mediaJSON && a.Params["as"] == discoveryV2.Kind && a.Params["g"] == discoveryV2.Group && a.Params["v"] == discoveryV2.Version {
			return true
		}
	}
	return false
}

// served reports whether a cluster serves a resource; a cluster whose status does not
// say otherwise does (cluster "" is the fleet, which serves everything cached).
func (h *Handler) served(cluster string, info aggregator.ResourceInfo) bool {
	if cluster == "" {
		return true
	}
	f, ok := h.Fleet.Freshness(cluster, info.Name)
	return !ok || f.ResourcePhase != clusters.PhaseNotServed
}

// byGroupVersion lists the resources served on the path, by group and version.
func (h *Handler) byGroupVersion(cluster string) map[schema.GroupVersion][]aggregator.ResourceInfo {
	out := map[schema.GroupVersion][]aggregator.ResourceInfo{}
	for _, r := range h.Index.Resources() {
		if !h.Pipeline.Visible(r) || !h.served(cluster, r) {
			continue
		}
		gv, err := schema.ParseGroupVersion(r.APIVersion)
		if err != nil {
			continue
		}
		out[gv] = append(out[gv], r)
	}
	return out
}

// groupVersions returns the served groups, sorted with the core group ("") first, each
// with its versions.
func groupVersions(byGV map[schema.GroupVersion][]aggregator.ResourceInfo) ([]string, map[string][]string) {
	versions := map[string][]string{}
	for gv := range byGV {
		versions[gv.Group] = append(versions[gv.Group], gv.Version)
	}
	groups := make([]string, 0, len(versions))
	for g, vs := range versions {
		sort.Strings(vs)
		groups = append(groups, g)
	}
	sort.Strings(groups)
	return groups, versions
}

func (h *Handler) discoveryRoot(w http.ResponseWriter, r *http.Request, cluster string, legacy bool) {
	if wantsAggregated(r) {
		h.aggregated(w, cluster, legacy)
		return
	}
	if legacy {
		writeJSON(w, &metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}}})
		return
	}
	groups, versions := groupVersions(h.byGroupVersion(cluster))
	list := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{}}
	for _, g := range groups {
		if g != "" {
			list.Groups = append(list.Groups, apiGroup(g, versions[g]))
		}
	}
	writeJSON(w, list)
}

func apiGroup(g string, versions []string) metav1.APIGroup {
	group := metav1.APIGroup{TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}, Name: g}
	for _, v := range versions {
		group.Versions = append(group.Versions, metav1.GroupVersionForDiscovery{GroupVersion: g + "/" + v, Version: v})
	}
	group.PreferredVersion = group.Versions[0]
	return group
}

// group serves /apis/{group}.
func (h *Handler) group(w http.ResponseWriter, cluster, g string) {
	_, versions := groupVersions(h.byGroupVersion(cluster))
	if g == "" || versions[g] == nil {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: g}, ""))
		return
	}
	group := apiGroup(g, versions[g])
	writeJSON(w, &group)
}

// resources serves /api/v1 and /apis/{group}/{version}.
func (h *Handler) resources(w http.ResponseWriter, cluster, group, version string) {
	gv := schema.GroupVersion{Group: group, Version: version}
	infos, ok := h.byGroupVersion(cluster)[gv]
	if !ok {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: group}, version))
		return
	}
	list := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.String()}
	for _, r := range infos {
		list.APIResources = append(list.APIResources, metav1.APIResource{
			Name: plural(r), SingularName: r.Singular, Namespaced: r.Namespaced, Kind: r.Kind, ShortNames: r.ShortNames,
			Categories: r.Categories, Verbs: readVerbs,
		})
	}
	writeJSON(w, list)
}

var readVerbs = metav1.Verbs{"get", "list", "watch"}

func plural(r aggregator.ResourceInfo) string {
	p, _, _ := strings.Cut(r.Name, ".")
	return p
}

// aggregated writes an apidiscovery.k8s.io/v2 APIGroupDiscoveryList: for /api (legacy)
// the core group, for /apis every other group.
func (h *Handler) aggregated(w http.ResponseWriter, cluster string, legacy bool) {
	byGV := h.byGroupVersion(cluster)
	groups, versions := groupVersions(byGV)
	list := &apidiscoveryv2.APIGroupDiscoveryList{
		TypeMeta: metav1.TypeMeta{Kind: discoveryV2.Kind, APIVersion: apidiscoveryv2.SchemeGroupVersion.String()},
		Items:    []apidiscoveryv2.APIGroupDiscovery{},
	}
	for _, g := range groups {
		if (g == "") != legacy {
			continue
		}
		group := apidiscoveryv2.APIGroupDiscovery{ObjectMeta: metav1.ObjectMeta{Name: g}}
		for _, v := range versions[g] {
			gv := schema.GroupVersion{Group: g, Version: v}
			version := apidiscoveryv2.APIVersionDiscovery{Version: v, Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent}
			for _, r := range byGV[gv] {
				scope := apidiscoveryv2.ScopeCluster
				if r.Namespaced {
					scope = apidiscoveryv2.ScopeNamespace
				}
				version.Resources = append(version.Resources, apidiscoveryv2.APIResourceDiscovery{
					Resource:         plural(r),
					ResponseKind:     &metav1.GroupVersionKind{Group: g, Version: v, Kind: r.Kind},
					Scope:            scope,
					SingularResource: r.Singular,
					Verbs:            readVerbs,
					ShortNames:       r.ShortNames,
					Categories:       r.Categories,
				})
			}
			group.Versions = append(group.Versions, version)
		}
		list.Items = append(list.Items, group)
	}
	w.Header().Set("Content-Type", mediaJSON+";g="+discoveryV2.Group+";v="+discoveryV2.Version+";as="+discoveryV2.Kind)
	w.Header().Add("Vary", "Accept")
	_ = json.NewEncoder(w).Encode(list)
}
