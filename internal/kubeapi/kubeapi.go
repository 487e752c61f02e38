package kubeapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	openapiv2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/version"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/request"
)

// ClusterAnnotation carries an object's cluster.
const ClusterAnnotation = "fleetcache.io/cluster"

// Fleet is what the API needs of the clusters: their names and versions.
// *clusters.Fleet is one.
type Fleet interface {
	Names() []string
	// Version is the cluster's apiserver version ("" until known); false for no such
	// cluster.
	Version(cluster string) (string, bool)
	Freshness(cluster, resource string) (clusters.Freshness, bool)
}

// Handler serves /clusters/{cluster}/... and /fleet/.... It parses the Kubernetes API's
// URL shapes and encodes as kube-apiserver does; every policy (scopes, Secrets, limits,
// the response cap, admission, stream shutdown and write timeout, error mapping) is the
// request pipeline's.
type Handler struct {
	Index *aggregator.Index
	Fleet Fleet
	// Pipeline is the request pipeline shared with the other faces. Nil: one of its
	// own, with the defaults.
	Pipeline *request.Pipeline
	// BookmarkInterval is how often a quiet watch that allows bookmarks gets one.
	// Default DefaultBookmarkInterval.
	BookmarkInterval time.Duration

	epoch string // prefixes every resourceVersion; see version.go
}

// Register mounts the handler's paths on mux, each wrapped by wrap (the server's HTTP
// metrics; nil: none), named "kubeapi-cluster" and "kubeapi-fleet".
func (h *Handler) Register(mux *http.ServeMux, wrap func(name string, h http.HandlerFunc) http.Handler) {
	if h.Pipeline == nil {
		h.Pipeline = request.New(h.Index, request.Options{})
	}
	if wrap == nil {
		wrap = func(_ string, h http.HandlerFunc) http.Handler { return h }
	}
	h.epoch = newEpoch()
	mux.Handle("/clusters/{cluster}/{rest...}", wrap("kubeapi-cluster", func(w http.ResponseWriter, r *http.Request) {
		cluster := r.PathValue("cluster")
		if sc := request.Scope(r); !h.hasCluster(cluster) || sc != nil && !sc.SeesCluster(cluster) {
			writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Resource: "clusters"}, cluster))
			return
		}
		h.serve(w, r, cluster, "/"+r.PathValue("rest"))
	}))
	mux.Handle("/fleet/{rest...}", wrap("kubeapi-fleet", func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, "", "/"+r.PathValue("rest"))
	}))
}

func (h *Handler) hasCluster(name string) bool {
	_, ok := h.Fleet.Version(name)
	return ok
}

// serve routes one request; cluster is "" for the whole fleet.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, cluster, path string) {
	if r.Method == http.MethodPost && (path == accessReviewPath || path == rulesReviewPath) {
		h.review(w, r, cluster, path) // kubectl auth can-i: it creates nothing
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeStatus(w, readOnly(r.Method+" is not allowed"))
		return
	}
	if path == "/openapi/v2" {
		// kubectl apply, create and edit validate against the OpenAPI schema before they
		// write. An empty schema lets them through to the write, which gets the clear
		// read-only error.
		writeEmptyOpenAPIv2(w)
		return
	}
	if path == "/openapi/v3" || strings.HasPrefix(path, "/openapi/v3/") {
		prefix := "/fleet"
		if cluster != "" {
			prefix = "/clusters/" + cluster
		}
		h.openAPIV3(w, r, cluster, prefix, strings.TrimPrefix(strings.TrimPrefix(path, "/openapi/v3"), "/"))
		return
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case path == "/version":
		h.version(w, cluster)
	case path == "/api" || path == "/apis":
		h.discoveryRoot(w, r, cluster, path == "/api")
	case len(parts) == 2 && parts[0] == "apis":
		h.group(w, cluster, parts[1])
	case len(parts) == 2 && parts[0] == "api":
		h.resources(w, cluster, "", parts[1])
	case len(parts) == 3 && parts[0] == "apis":
		h.resources(w, cluster, parts[1], parts[2])
	case parts[0] == "api" && len(parts) >= 3:
		h.object(w, r, cluster, "", parts[1], parts[2:])
	case parts[0] == "apis" && len(parts) >= 4:
		h.object(w, r, cluster, parts[1], parts[2], parts[3:])
	default:
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{}, path))
	}
}

func readOnly(what string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusMethodNotAllowed, Reason: metav1.StatusReasonMethodNotAllowed,
		Message: "fleetcache serves a read-only cache of the fleet (" + what + "); write to the cluster's own apiserver instead",
	}}
}

func (h *Handler) version(w http.ResponseWriter, cluster string) {
	// The oldest cluster's version: what kubectl should assume of the fleet.
	names := []string{cluster}
	if cluster == "" {
		names = h.Fleet.Names()
	}
	var oldest *utilversion.Version
	v := ""
	for _, name := range names {
		cv, _ := h.Fleet.Version(name)
		parsed, err := utilversion.ParseGeneric(cv)
		if err != nil {
			continue // not known yet, or not a version
		}
		if oldest == nil || parsed.LessThan(oldest) {
			oldest, v = parsed, cv
		}
	}
	info := version.Info{GitVersion: v, Platform: "fleetcache"}
	if oldest != nil {
		info.Major, info.Minor = fmt.Sprint(oldest.Major()), fmt.Sprint(oldest.Minor())
	}
	writeJSON(w, &info)
}

// object serves list, get and watch: rest is [resource], [resource, name],
// [namespaces, ns, resource] or [namespaces, ns, resource, name] (and
// [namespaces, name] for a namespace itself).
func (h *Handler) object(w http.ResponseWriter, r *http.Request, cluster, group, version string, rest []string) {
	var ns, resource, name string
	switch {
	case len(rest) >= 3 && rest[0] == "namespaces":
		ns, resource = rest[1], rest[2]
		if len(rest) == 4 {
			name = rest[3]
		} else if len(rest) > 4 {
			writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Resource: rest[2]}, strings.Join(rest[3:], "/")+" (subresources are not cached)"))
			return
		}
	case len(rest) <= 2:
		resource = rest[0]
		if len(rest) == 2 {
			name = rest[1]
		}
	default:
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{}, strings.Join(rest, "/")))
		return
	}
	full := resource
	if group != "" {
		full += "." + group
	}
	info, ok := h.Index.Resource(full)
	if !ok || !h.Pipeline.Visible(info) || info.APIVersion != (schema.GroupVersion{Group: group, Version: version}).String() || !h.served(cluster, info) {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: group, Resource: resource}, ""))
		return
	}
	opts, bad := listOptions(r)
	if bad != nil {
		writeStatus(w, bad)
		return
	}
	watching := request.IsWatch(r) // as opts.Watch: the pipeline's one detection
	if name != "" && !watching {
		h.get(w, r, cluster, info, ns, name)
		return
	}
	v := r.URL.Query()
	rd := request.Read{
		Resource: info.Name, Cluster: cluster, Namespace: ns,
		LabelSelector: v.Get("labelSelector"), FieldSelector: v.Get("fieldSelector"),
		Continue: v.Get("continue"),
		// A sharding router narrows a fleet-wide read to the clusters a replica caches
		// and positions a list after the last item it sent (internal/sharding).
		Only: only(r), After: v.Get("after"),
	}
	if watching {
		rd.Name = name // a watch of one object, as kubectl get NAME -w asks for it
		q, err := h.Pipeline.Query(r, rd)
		if err != nil {
			writeQueryError(w, err)
			return
		}
		h.watch(w, r, q, info, opts)
		return
	}
	rd.Paged, rd.UpperBound, rd.Limit = true, true, v.Get("limit")
	// Answered whole, whatever the limit, as the API conventions allow ("servers may
	// choose not to support the limit argument and will return all of the available
	// results"), and cut only at the response cap: Tables and JSON, which kubectl asks
	// for in pages of 500, each page waiting for kubectl's client-side rate limit (5
	// requests a second after a burst of 10) when the cache answers one in a millisecond.
	// Protobuf (client-go's typed clients, which page on purpose) keeps its limit.
	// resourceVersion "0" is one page whatever the limit, as kube-apiserver's watch cache
	// answers it.
	s := negotiate(r, info)
	if rd.AtOnce() && isProtobuf(s) && AcceptsJSON(r) {
		// Everything at once, streamed as JSON (which the client accepts too), rather
		// than a protobuf list held whole in memory.
		s, _ = serializers(mediaJSON)
	}
	rd.Whole = WantsTable(r) || !isProtobuf(s) || opts.ResourceVersion == "0"
	q, err := h.Pipeline.Query(r, rd)
	if err != nil {
		writeQueryError(w, err)
		return
	}
	rv, bad := h.listVersion(opts, &q)
	if bad != nil {
		writeStatus(w, bad)
		return
	}
	h.list(w, r, q, info, rv, s, rd.AtOnce())
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, cluster string, info aggregator.ResourceInfo, ns, name string) {
	var item aggregator.Item
	var err error
	if cluster != "" {
		item, err = h.Pipeline.Get(r, cluster, info.Name, ns, name)
	} else {
		// On the fleet path a name may exist in several clusters: the first, in cluster
		// order, is returned; its annotation says which.
		err = aggregator.ErrNotFound
		names := h.Fleet.Names()
		if o := only(r); o != nil {
			names = o
		}
		for _, c := range names {
			if item, err = h.Pipeline.Get(r, c, info.Name, ns, name); err == nil {
				break
			}
		}
	}
	if err != nil {
		plural, group, _ := strings.Cut(info.Name, ".")
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: group, Resource: plural}, name))
		return
	}
	obj, err := tagged(item)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	if WantsTable(r) {
		writeJSON(w, table(info, []aggregator.Item{item}, []runtime.Object{obj}, ""))
		return
	}
	if s := negotiate(r, info); isProtobuf(s) {
		writeObject(w, s, obj)
		return
	}
	writeJSON(w, obj)
}

// tagged decodes an item into a private copy annotated with its cluster.
func tagged(it aggregator.Item) (runtime.Object, error) {
	obj, err := it.Object.Decode()
	if err != nil {
		return nil, err
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	ann := m.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[ClusterAnnotation] = it.Cluster
	m.SetAnnotations(ann)
	return obj, nil
}

// only reads the only parameter: the clusters a sharding router asks this replica for.
func only(r *http.Request) []string {
	var out []string
	for _, c := range strings.Split(r.URL.Query().Get("only"), ",") {
		if c != "" {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// WantsTable reports whether a request asks for a server-side Table (kubectl does).
func WantsTable(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if strings.Contains(part, "as=Table") && strings.Contains(part, "g=meta.k8s.io") {
			return true
		}
	}
	return false
}

// list answers q (whole, or a page for protobuf) in s, or as a Table; rv is its
// resourceVersion (listVersion). atOnce lifts the response cap of streamed answers
// (request.Read.AtOnce); a protobuf list, built whole in memory, keeps it, and only a
// client that accepts nothing else gets one without a limit.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, q aggregator.Query, info aggregator.ResourceInfo, rv string, s runtime.SerializerInfo, atOnce bool) {
	list := h.Pipeline.StreamList // streamed, whole lists read as they are written
	protobuf := !WantsTable(r) && isProtobuf(s)
	if protobuf {
		list = h.Pipeline.List // built whole by apimachinery before it is written
	}
	res, err := list(r, q)
	if err != nil {
		writeQueryError(w, err)
		return
	}
	defer res.Close()
	if atOnce && !protobuf {
		res.Uncapped()
	}
	if res.Partial {
		var stale []string
		for _, f := range res.Clusters {
			switch {
			case f.Phase != clusters.PhaseSynced:
				stale = append(stale, fmt.Sprintf("%s is %s %s", f.Cluster, f.Phase, f.Reason))
			case f.ResourcePhase != clusters.PhaseSynced && f.ResourcePhase != clusters.PhaseNotServed:
				stale = append(stale, fmt.Sprintf("%s: %s is %s %s", f.Cluster, info.Name, f.ResourcePhase, f.ResourceReason))
			}
		}
		// kubectl prints Warning headers: the user learns the answer may be incomplete.
		w.Header().Add("Warning", fmt.Sprintf(`299 - "fleetcache: partial answer: %s"`, strings.Join(stale, ", ")))
	}
	// Streamed: the answer is written as it is encoded, never held whole.
	if WantsTable(r) {
		writeTableList(w, r, info, res, rv)
		return
	}
	if protobuf {
		// Protobuf for client-go's typed clients: decoded and encoded by apimachinery,
		// the objects held until the list is cut at the response cap.
		b := res.Budget()
		objs := make([]runtime.Object, 0, len(res.Items))
		for i, it := range res.Items {
			obj, err := tagged(it)
			if err != nil {
				writeStatus(w, apierrors.NewInternalError(err))
				return
			}
			if !b.Fit(i, protoSize(obj)) {
				break
			}
			objs = append(objs, obj)
		}
		writeTypedList(w, s, info, metav1.ListMeta{ResourceVersion: rv, Continue: wrapContinue(rv, b.Continue())}, objs)
		return
	}
	writeObjectList(w, r, info, res, rv)
}

// protoSize is an object's protobuf size (generated types know it), for the response cap.
func protoSize(obj runtime.Object) int {
	if s, ok := obj.(interface{ Size() int }); ok {
		return s.Size()
	}
	return 0
}

// writeQueryError answers err as the pipeline maps it, as a Status.
func writeQueryError(w http.ResponseWriter, err error) { writeStatus(w, request.Status(err)) }

func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) { request.WriteStatus(w, err) }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeEmptyOpenAPIv2(w http.ResponseWriter) {
	doc := &openapiv2.Document{Swagger: "2.0", Info: &openapiv2.Info{Title: "fleetcache (read-only)", Version: "v1"}, Paths: &openapiv2.Paths{}}
	raw, err := proto.Marshal(doc)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	w.Header().Set("Content-Type", "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
	_, _ = w.Write(raw)
}
