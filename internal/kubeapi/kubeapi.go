package kubeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
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
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
)

// streamWriteTimeout bounds writing one watch event.
const streamWriteTimeout = 10 * time.Second

// ClusterAnnotation carries an object's cluster.
const ClusterAnnotation = "fleetcache.io/cluster"

// Fleet is what the API needs of the clusters: their names and versions.
// *clusters.Fleet is one.
type Fleet interface {
	Names() []string
	ClusterStatus(name string) (clusters.ClusterStatus, bool)
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
}

func (h *Handler) scope(r *http.Request) aggregator.Scope {
	if h.Scope == nil {
		return nil
	}
	return h.Scope(r)
}

func (h *Handler) visible(info aggregator.ResourceInfo) bool {
	return h.ServeSecrets || info.Kind != "Secret" || info.APIVersion != "v1"
}

// Register mounts the handler's paths on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	if h.MaxLimit == 0 {
		h.MaxLimit = 5000
	}
	mux.HandleFunc("/clusters/{cluster}/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		cluster := r.PathValue("cluster")
		if sc := h.scope(r); !h.hasCluster(cluster) || sc != nil && !sc.SeesCluster(cluster) {
			writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Resource: "clusters"}, cluster))
			return
		}
		h.serve(w, r, cluster, "/"+r.PathValue("rest"))
	})
	mux.HandleFunc("/fleet/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, "", "/"+r.PathValue("rest"))
	})
}

func (h *Handler) hasCluster(name string) bool {
	_, ok := h.Fleet.ClusterStatus(name)
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
	case path == "/api":
		writeJSON(w, &metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}}})
	case path == "/apis":
		h.groups(w)
	case len(parts) == 2 && parts[0] == "api":
		h.resources(w, "", parts[1])
	case len(parts) == 3 && parts[0] == "apis":
		h.resources(w, parts[1], parts[2])
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
	v := ""
	for _, name := range names {
		if s, ok := h.Fleet.ClusterStatus(name); ok && s.Version != "" && (v == "" || s.Version < v) {
			v = s.Version
		}
	}
	info := version.Info{GitVersion: v, Platform: "fleetcache"}
	if parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3); len(parts) >= 2 {
		info.Major, info.Minor = parts[0], parts[1]
	}
	writeJSON(w, &info)
}

// groupVersions lists the cached resources by group and version.
func (h *Handler) byGroupVersion() map[schema.GroupVersion][]aggregator.ResourceInfo {
	out := map[schema.GroupVersion][]aggregator.ResourceInfo{}
	for _, r := range h.Index.Resources() {
		if !h.visible(r) {
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

func (h *Handler) groups(w http.ResponseWriter) {
	byGroup := map[string][]string{}
	for gv := range h.byGroupVersion() {
		if gv.Group != "" {
			byGroup[gv.Group] = append(byGroup[gv.Group], gv.Version)
		}
	}
	list := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	names := make([]string, 0, len(byGroup))
	for g := range byGroup {
		names = append(names, g)
	}
	sort.Strings(names)
	for _, g := range names {
		group := metav1.APIGroup{Name: g}
		for _, v := range byGroup[g] {
			gv := metav1.GroupVersionForDiscovery{GroupVersion: g + "/" + v, Version: v}
			group.Versions = append(group.Versions, gv)
		}
		group.PreferredVersion = group.Versions[0]
		list.Groups = append(list.Groups, group)
	}
	writeJSON(w, list)
}

func (h *Handler) resources(w http.ResponseWriter, group, version string) {
	gv := schema.GroupVersion{Group: group, Version: version}
	infos, ok := h.byGroupVersion()[gv]
	if !ok {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: group}, version))
		return
	}
	list := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.String()}
	for _, r := range infos {
		plural, _, _ := strings.Cut(r.Name, ".")
		list.APIResources = append(list.APIResources, metav1.APIResource{
			Name: plural, SingularName: r.Singular, Namespaced: r.Namespaced, Kind: r.Kind, ShortNames: r.ShortNames,
			Verbs: metav1.Verbs{"get", "list", "watch"},
		})
	}
	writeJSON(w, list)
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
	if !ok || !h.visible(info) || info.APIVersion != (schema.GroupVersion{Group: group, Version: version}).String() {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: group, Resource: resource}, ""))
		return
	}
	if name != "" && r.URL.Query().Get("watch") != "true" {
		h.get(w, r, cluster, info, ns, name)
		return
	}
	q, err := h.query(r, cluster, info, ns, name)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	if r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1" {
		h.watch(w, r, q, info)
		return
	}
	h.list(w, r, q, info)
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

func (h *Handler) list(w http.ResponseWriter, r *http.Request, q aggregator.Query, info aggregator.ResourceInfo) {
	if wantsTable(r) {
		q.Limit = 0 // a Table is answered whole: see tablesWhole in table.go
	}
	cursor, err := h.Index.Cursor(q)
	if err != nil {
		writeQueryError(w, err)
		return
	}
	res, err := h.Index.List(q)
	if err != nil {
		writeQueryError(w, err)
		return
	}
	if res.Partial {
		var stale []string
		for _, f := range res.Clusters {
			if f.Phase != clusters.PhaseSynced {
				stale = append(stale, fmt.Sprintf("%s is %s", f.Cluster, f.Phase))
			}
		}
		// kubectl prints Warning headers: the user learns the answer may be incomplete.
		w.Header().Add("Warning", fmt.Sprintf(`299 - "fleetcache: partial answer: %s"`, strings.Join(stale, ", ")))
	}
	// Streamed: the answer is written as it is encoded, never held whole.
	if wantsTable(r) {
		writeTableList(w, r, info, res, cursor.Encode())
		return
	}
	writeObjectList(w, r, info, res, cursor.Encode())
}

func (h *Handler) watch(w http.ResponseWriter, r *http.Request, q aggregator.Query, info aggregator.ResourceInfo) {
	var from aggregator.Cursor
	if rv := r.URL.Query().Get("resourceVersion"); rv != "" && rv != "0" {
		c, err := aggregator.ParseCursor(rv)
		if err != nil {
			writeStatus(w, apierrors.NewBadRequest("resourceVersion: not one this server issued: "+err.Error()))
			return
		}
		from = c
	}
	ctx := r.Context()
	if s := r.URL.Query().Get("timeoutSeconds"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			var cancel func()
			ctx, cancel = context.WithTimeout(ctx, time.Duration(n)*time.Second)
			defer cancel()
		}
	}
	wi, err := h.Index.Watch(ctx, q, from)
	if err != nil {
		writeQueryError(w, err)
		return
	}
	defer wi.Stop()
	asTable := wantsTable(r)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-wi.ResultChan():
			// A client that stops reading is disconnected instead of holding the stream.
			_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			if !ok {
				return
			}
			out, skip := h.watchEvent(ev, info, asTable)
			if skip {
				continue
			}
			if err := enc.Encode(out); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}

// watchEvent converts an index event to the Kubernetes watch wire format.
func (h *Handler) watchEvent(ev watch.Event, info aggregator.ResourceInfo, asTable bool) (metav1.WatchEvent, bool) {
	switch o := ev.Object.(type) {
	case *aggregator.WatchItem:
		if ev.Type == watch.Bookmark {
			return metav1.WatchEvent{}, true // kubectl does not need them; cursors are per event
		}
		obj, err := tagged(o.Item)
		if err != nil {
			return statusEvent(apierrors.NewInternalError(err)), false
		}
		if asTable {
			t := table(info, []aggregator.Item{o.Item}, []runtime.Object{obj}, o.Cursor)
			return metav1.WatchEvent{Type: string(ev.Type), Object: runtime.RawExtension{Object: t}}, false
		}
		if m, err := meta.Accessor(obj); err == nil {
			m.SetResourceVersion(o.Cursor) // resuming from it continues the fleet's stream
		}
		return metav1.WatchEvent{Type: string(ev.Type), Object: runtime.RawExtension{Object: obj}}, false
	case *metav1.Status:
		return metav1.WatchEvent{Type: string(watch.Error), Object: runtime.RawExtension{Object: o}}, false
	}
	return metav1.WatchEvent{}, true
}

func statusEvent(err *apierrors.StatusError) metav1.WatchEvent {
	st := err.Status()
	return metav1.WatchEvent{Type: string(watch.Error), Object: runtime.RawExtension{Object: &st}}
}

func writeQueryError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, aggregator.ErrExpired):
		writeStatus(w, apierrors.NewResourceExpired(err.Error()))
	case errors.Is(err, aggregator.ErrUnknownResource), errors.Is(err, aggregator.ErrUnknownCluster), errors.Is(err, aggregator.ErrNotFound):
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{}, err.Error()))
	default:
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
	}
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
