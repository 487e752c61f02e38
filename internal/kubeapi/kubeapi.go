package kubeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	openapiv2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/version"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
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

// Handler serves /clusters/{cluster}/... and /fleet/....
type Handler struct {
	Index *aggregator.Index
	Fleet Fleet
	// MaxLimit caps a list's page size. Default 5000.
	MaxLimit int
	// ServeSecrets allows Secrets (without values); otherwise they are hidden from
	// discovery and refused.
	ServeSecrets bool
	// Scope returns the caller's visibility; nil or a nil result sees everything.
	Scope func(*http.Request) aggregator.Scope
	// BookmarkInterval is how often a quiet watch that allows bookmarks gets one.
	// Default DefaultBookmarkInterval.
	BookmarkInterval time.Duration
	// Streams ends when the server shuts down: open watches end cleanly then. Nil: never.
	Streams context.Context
	// StreamWriteTimeout bounds writing one watch event: a client that stops reading is
	// disconnected after it. Default 10s.
	StreamWriteTimeout time.Duration

	epoch string // prefixes every resourceVersion; see version.go
}

func (h *Handler) scope(r *http.Request) aggregator.Scope {
	if h.Scope == nil {
		return nil
	}
	return h.Scope(r)
}

func (h *Handler) visible(info aggregator.ResourceInfo) bool {
	return h.ServeSecrets || !info.IsSecret()
}

// Register mounts the handler's paths on mux, each wrapped by wrap (the server's HTTP
// metrics; nil: none), named "kubeapi-cluster" and "kubeapi-fleet".
func (h *Handler) Register(mux *http.ServeMux, wrap func(name string, h http.HandlerFunc) http.Handler) {
	if h.MaxLimit == 0 {
		h.MaxLimit = 5000
	}
	if h.StreamWriteTimeout == 0 {
		h.StreamWriteTimeout = 10 * time.Second
	}
	if h.Streams == nil {
		h.Streams = context.Background()
	}
	if wrap == nil {
		wrap = func(_ string, h http.HandlerFunc) http.Handler { return h }
	}
	h.epoch = newEpoch()
	mux.Handle("/clusters/{cluster}/{rest...}", wrap("kubeapi-cluster", func(w http.ResponseWriter, r *http.Request) {
		cluster := r.PathValue("cluster")
		if sc := h.scope(r); !h.hasCluster(cluster) || sc != nil && !sc.SeesCluster(cluster) {
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
	if !ok || !h.visible(info) || info.APIVersion != (schema.GroupVersion{Group: group, Version: version}).String() || !h.served(cluster, info) {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: group, Resource: resource}, ""))
		return
	}
	opts, bad := listOptions(r)
	if bad != nil {
		writeStatus(w, bad)
		return
	}
	if name != "" && !opts.Watch {
		h.get(w, r, cluster, info, ns, name)
		return
	}
	q, err := h.query(r, cluster, info, ns, name)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	if opts.Watch {
		h.watch(w, r, q, info, opts)
		return
	}
	if opts.ResourceVersion == "0" {
		q.Limit = 0 // as kube-apiserver's watch cache: one page, one consistent position
	}
	rv, bad := h.listVersion(opts, &q)
	if bad != nil {
		writeStatus(w, bad)
		return
	}
	h.list(w, r, q, info, rv)
}

func (h *Handler) query(r *http.Request, cluster string, info aggregator.ResourceInfo, ns, name string) (aggregator.Query, error) {
	v := r.URL.Query()
	q := aggregator.Query{Resource: info.Name, Clusters: cluster, Namespace: ns, Continue: v.Get("continue"), Scope: h.scope(r)}
	var err error
	if q.LabelSelector, err = labels.Parse(v.Get("labelSelector")); err != nil {
		return q, fmt.Errorf("labelSelector: %w", err)
	}
	fs := v.Get("fieldSelector")
	if name != "" {
		// A watch of one object, as kubectl get NAME -w asks for it.
		if fs != "" {
			fs += ","
		}
		fs += "metadata.name=" + name
	}
	if q.FieldSelector, err = fields.ParseSelector(fs); err != nil {
		return q, fmt.Errorf("fieldSelector: %w", err)
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, fmt.Errorf("limit: %q is not a non-negative number", s)
		}
		q.Limit = min(n, h.MaxLimit)
	}
	return q, nil
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, cluster string, info aggregator.ResourceInfo, ns, name string) {
	var item aggregator.Item
	var err error
	scope := h.scope(r)
	if cluster != "" {
		item, err = h.Index.Get(cluster, info.Name, ns, name, scope)
	} else {
		// On the fleet path a name may exist in several clusters: the first, in cluster
		// order, is returned; its annotation says which.
		err = aggregator.ErrNotFound
		for _, c := range h.Fleet.Names() {
			if item, err = h.Index.Get(c, info.Name, ns, name, scope); err == nil {
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
	if wantsTable(r) {
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

func wantsTable(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if strings.Contains(part, "as=Table") && strings.Contains(part, "g=meta.k8s.io") {
			return true
		}
	}
	return false
}

// list answers one page; rv is its resourceVersion (listVersion).
func (h *Handler) list(w http.ResponseWriter, r *http.Request, q aggregator.Query, info aggregator.ResourceInfo, rv string) {
	if wantsTable(r) {
		q.Limit = 0 // a Table is answered whole: see tablesWhole in table.go
	}
	res, err := h.Index.List(q)
	if err != nil {
		writeQueryError(w, err)
		return
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
	if wantsTable(r) {
		writeTableList(w, r, info, res, rv, wrapContinue(rv, res.Continue))
		return
	}
	if s := negotiate(r, info); isProtobuf(s) {
		// Protobuf for client-go's typed clients: decoded and encoded by apimachinery.
		objs := make([]runtime.Object, len(res.Items))
		for i, it := range res.Items {
			if objs[i], err = tagged(it); err != nil {
				writeStatus(w, apierrors.NewInternalError(err))
				return
			}
		}
		writeTypedList(w, s, info, metav1.ListMeta{ResourceVersion: rv, Continue: wrapContinue(rv, res.Continue)}, objs)
		return
	}
	writeObjectList(w, r, info, res, rv, wrapContinue(rv, res.Continue))
}

func writeQueryError(w http.ResponseWriter, err error) { writeStatus(w, queryStatus(err)) }

// queryStatus maps the aggregator's errors to what kube-apiserver would answer.
func queryStatus(err error) *apierrors.StatusError {
	switch {
	case errors.Is(err, aggregator.ErrExpired):
		return apierrors.NewResourceExpired(err.Error())
	case errors.Is(err, aggregator.ErrUnknownResource), errors.Is(err, aggregator.ErrUnknownCluster), errors.Is(err, aggregator.ErrNotFound):
		return apierrors.NewNotFound(schema.GroupResource{}, err.Error())
	}
	return apierrors.NewBadRequest(err.Error())
}

func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	st := err.Status()
	st.Kind, st.APIVersion = "Status", "v1"
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
	_ = json.NewEncoder(w).Encode(&st)
}

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
