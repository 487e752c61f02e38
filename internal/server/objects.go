package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/glob"
	"github.com/fleetcache/fleetcache/internal/request"
	"github.com/fleetcache/fleetcache/internal/wire"
)

// ClusterScopedNamespace stands for "no namespace" in object paths:
// /api/v1/objects/{cluster}/nodes/_/{name}.
const ClusterScopedNamespace = "_"

// parseQuery parses the parameters every query endpoint shares into the pipeline's
// Read, and has the pipeline turn it into a query.
func (a *api) parseQuery(r *http.Request, paging bool) (aggregator.Query, error) {
	v := r.URL.Query()
	for name := range v {
		if name == "" {
			return aggregator.Query{}, request.BadParam{Name: "(unnamed)", Msg: "a parameter without a name (a stray '=' or '&'?)"}
		}
		if !knownParams[name] {
			return aggregator.Query{}, request.BadParam{Name: name, Msg: "unknown parameter (see docs/api.md)"}
		}
	}
	return a.p.Query(r, request.Read{
		Resource: v.Get("resource"), Cluster: v.Get("cluster"), Namespace: v.Get("namespace"),
		LabelSelector: v.Get("labelSelector"), FieldSelector: v.Get("fieldSelector"),
		Limit: v.Get("limit"), Continue: v.Get("continue"), Paged: paging,
		Only: splitList(v.Get("only")), After: v.Get("after"),
	})
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

var knownParams = map[string]bool{
	"resource": true, "cluster": true, "namespace": true, "labelSelector": true, "fieldSelector": true,
	"limit": true, "continue": true, "groupBy": true, "cursor": true, "pretty": true, "format": true,
	// Used between sharded replicas (see internal/sharding), harmless from anyone: they
	// only narrow or position a query, or frame its answer.
	"local": true, "only": true, "after": true, "initialEvents": true, "framing": true,
}

// itemJSON is one object in a response, with its cluster.
type itemJSON struct {
	Cluster string          `json:"cluster"`
	Object  json.RawMessage `json:"object"`
}

// encodeObject is the item's object as JSON.
func encodeObject(it aggregator.Item) (json.RawMessage, error) {
	return wire.AppendPlainObject(nil, it)
}

// listHead is the part of an ObjectList before its items; items and the continue token
// follow, streamed (see writeList).
type listHead struct {
	Kind     string                  `json:"kind"`
	Resource aggregator.ResourceInfo `json:"resource"`
	Clusters []aggregator.Freshness  `json:"clusters"`
	Partial  bool                    `json:"partial"`
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	q, err := a.parseQuery(r, true)
	if err != nil {
		request.WriteError(w, r, err)
		return
	}
	v := r.URL.Query()
	if v.Has("groupBy") || v.Has("cursor") {
		request.WriteError(w, r, request.BadParam{Name: "groupBy/cursor", Msg: "not accepted by /api/v1/objects (see /api/v1/count and /api/v1/watch)"})
		return
	}
	format := v.Get("format")
	if format != "" && format != "table" {
		request.WriteError(w, r, request.BadParam{Name: "format", Msg: fmt.Sprintf("%q: want table, or none for objects", format)})
		return
	}
	res, err := a.p.StreamList(r, q)
	if err != nil {
		request.WriteError(w, r, err)
		return
	}
	defer res.Close()
	a.writeList(w, r, res, format == "table")
}

// writeList streams an ObjectList: the items (objects, or a Table's rows), then the
// continue token.
func (a *api) writeList(w http.ResponseWriter, r *http.Request, res *request.Answer, asTable bool) {
	head, err := json.Marshal(listHead{Kind: "ObjectList", Resource: res.Resource, Clusters: res.Clusters, Partial: res.Partial})
	if err != nil {
		request.WriteError(w, r, err)
		return
	}
	enc := request.ListEncoder{Head: head[:len(head)-1]} // without its closing brace
	if r.URL.Query().Get("framing") == "lines" {
		// Between sharded replicas: the head, each item and the continue token on lines of
		// their own, so that a router splits the answer without parsing it.
		var item func(dst []byte, it aggregator.Item) ([]byte, error)
		if asTable {
			table := wire.NewTable(res.Resource, wire.IncludeName)
			cols, _ := json.Marshal(table.Columns())
			enc.Head = append(append(enc.Head, `,"columnDefinitions":`...), cols...)
			now := time.Now()
			item = func(dst []byte, it aggregator.Item) ([]byte, error) { return table.AppendRow(dst, it, now) }
		} else {
			item = appendItem
		}
		enc.Head = append(enc.Head, "}\n"...)
		enc.Sep = '\n'
		enc.Item = func(dst []byte, it aggregator.Item) ([]byte, error) {
			start := len(dst)
			dst, err := item(dst, it)
			if err == nil && bytes.IndexByte(dst[start:], '\n') >= 0 {
				var c bytes.Buffer // a custom resource's stored JSON may hold newlines
				if json.Compact(&c, dst[start:]) == nil {
					dst = append(dst[:start], c.Bytes()...)
				}
			}
			return dst, err
		}
		enc.Tail = func(dst []byte, cont string) []byte {
			dst = append(dst, "\n{\"continue\":"...)
			dst = wire.AppendString(dst, cont)
			return append(dst, "}\n"...)
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		_ = res.Stream(w, enc)
		return
	}
	if asTable {
		// One Table for the page: its columns are the resource's, whatever the items.
		table := wire.NewTable(res.Resource, wire.IncludeName)
		now := time.Now()
		enc.Head = append(append(enc.Head, `,"table":`...), table.Start(nil, "", "")...)
		enc.Item = func(dst []byte, it aggregator.Item) ([]byte, error) { return table.AppendRow(dst, it, now) }
		enc.Tail = func(dst []byte, cont string) []byte { return listTail(table.End(dst), cont) }
	} else {
		enc.Head = append(enc.Head, `,"items":[`...)
		enc.Item = appendItem
		enc.Tail = func(dst []byte, cont string) []byte { return listTail(append(dst, ']'), cont) }
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if !pretty(r) {
		_ = res.Stream(w, enc)
		return
	}
	var buf, indented bytes.Buffer // indenting needs the whole answer: for people, not for bulk
	if res.Stream(&buf, enc) == nil && json.Indent(&indented, buf.Bytes(), "", "  ") == nil {
		_, _ = indented.WriteTo(w)
	}
}

// appendItem appends one item of an ObjectList: its cluster and its object.
func appendItem(dst []byte, it aggregator.Item) ([]byte, error) {
	dst = append(dst, `{"cluster":`...)
	dst = wire.AppendString(dst, it.Cluster)
	dst = append(dst, `,"object":`...)
	dst, err := wire.AppendPlainObject(dst, it)
	return append(dst, '}'), err
}

// listTail closes an ObjectList after its items.
func listTail(dst []byte, cont string) []byte {
	if cont != "" {
		dst = append(dst, `,"continue":`...)
		dst = wire.AppendString(dst, cont)
	}
	return append(dst, "}\n"...)
}

func pretty(r *http.Request) bool {
	p := r.URL.Query().Get("pretty")
	return p != "" && p != "false" && p != "0"
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("namespace")
	if ns == ClusterScopedNamespace {
		ns = ""
	}
	it, err := a.p.Get(r, r.PathValue("cluster"), r.PathValue("resource"), ns, r.PathValue("name"))
	if err != nil {
		request.WriteError(w, r, err)
		return
	}
	raw, err := encodeObject(it)
	if err != nil {
		request.WriteError(w, r, apierrors.NewInternalError(err))
		return
	}
	writeData(w, r, itemJSON{Cluster: it.Cluster, Object: raw})
}

func (a *api) count(w http.ResponseWriter, r *http.Request) {
	q, err := a.parseQuery(r, false)
	if err != nil {
		request.WriteError(w, r, err)
		return
	}
	var groupBy []string
	if s := r.URL.Query().Get("groupBy"); s != "" {
		groupBy = strings.Split(s, ",")
	}
	if err := aggregator.ValidateGroupBy(groupBy); err != nil {
		request.WriteError(w, r, request.BadParam{Name: "groupBy", Msg: err.Error()})
		return
	}
	res, err := a.p.Count(r, q, groupBy)
	if err != nil {
		request.WriteError(w, r, err)
		return
	}
	writeData(w, r, map[string]any{
		"kind": "Count", "resource": res.Resource, "groupBy": res.GroupBy, "groups": nonNil(res.Groups),
		"total": res.Total, "clusters": res.Clusters, "partial": res.Partial,
	})
}

func nonNil(g []aggregator.Group) []aggregator.Group {
	if g == nil {
		return []aggregator.Group{}
	}
	return g
}

// watchLine is one line (NDJSON) or one SSE data field of a watch stream.
type watchLine struct {
	Type            watch.EventType   `json:"type"`
	Cluster         string            `json:"cluster,omitempty"`
	ResourceVersion string            `json:"resourceVersion,omitempty"`
	Cursor          string            `json:"cursor,omitempty"`
	Object          json.RawMessage   `json:"object,omitempty"`
	Error           *request.APIError `json:"error,omitempty"`
}

func (a *api) watch(w http.ResponseWriter, r *http.Request) {
	q, err := a.parseQuery(r, false)
	if err != nil {
		request.WriteError(w, r, err)
		return
	}
	var from aggregator.Cursor
	if s := r.URL.Query().Get("cursor"); s != "" {
		if from, err = aggregator.ParseCursor(s); err != nil {
			if errors.Is(err, aggregator.ErrExpired) {
				request.WriteError(w, r, err) // 410: list again
			} else {
				request.WriteError(w, r, request.BadParam{Name: "cursor", Msg: err.Error()})
			}
			return
		}
	}
	if err := a.onlyHere(r.Context(), q); err != nil {
		request.WriteError(w, r, err)
		return
	}
	// initialEvents=true starts with the current state (ADDED events, then the first
	// BOOKMARK): what a sharding router needs when a cluster moves to another replica.
	wi, err := a.p.Watch(r.Context(), q, aggregator.WatchOptions{From: from, InitialEvents: r.URL.Query().Get("initialEvents") == "true"})
	if err != nil {
		request.WriteError(w, r, err)
		return
	}
	defer wi.Stop()
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	var buf, objBuf []byte // one line at a time, reused
	write := func(line watchLine) error {
		raw, err := appendLine(buf[:0], line)
		if err != nil {
			return err
		}
		buf = raw
		if sse {
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", strings.ToLower(string(line.Type)), raw)
		} else {
			_, err = w.Write(append(raw, '\n'))
		}
		return err
	}
	var lastCursor string
	// A bookmark now and then keeps proxies from closing an idle stream and gives the
	// client a fresh cursor.
	a.p.Stream(r.Context(), w, wi.ResultChan(), 30*time.Second, func(ev *watch.Event) error {
		if ev == nil {
			return write(watchLine{Type: watch.Bookmark, Cursor: lastCursor})
		}
		line, err := toLine(*ev, objBuf[:0])
		objBuf = line.Object
		if err != nil {
			line = watchLine{Type: watch.Error, Error: &request.APIError{Code: 500, Reason: "InternalError", Message: err.Error()}}
		}
		if line.Cursor != "" {
			lastCursor = line.Cursor
		}
		return write(line)
	})
}

// onlyHere checks a watch's only: a sharding router takes a cluster over from this
// replica's watch only once the cluster is synced here, since before that its "current
// state" would be empty. A cluster of only that is not in the configuration (the same on
// every replica), or that the caller may not see, or that the cluster parameter excludes,
// is bad input: 400. One that is configured but not cached or not Synced here yet (it
// has not started, or another replica owns it), or any before the cluster source has been
// read, is 503: a router tries again.
func (a *api) onlyHere(ctx context.Context, q aggregator.Query) error {
	if len(q.Only) == 0 {
		return nil
	}
	probe := q
	probe.Limit = 1
	res, err := a.ix.List(ctx, probe)
	if err != nil {
		return err
	}
	here := map[string]bool{}
	for _, f := range res.Clusters {
		here[f.Cluster] = true
	}
	loaded := a.opts.Fleet == nil || a.opts.Fleet.Loaded()
	var notHere []string
	for _, c := range q.Only {
		if here[c] {
			continue
		}
		if loaded && !a.configured(q, c) {
			return request.BadParam{Name: "only", Msg: fmt.Sprintf("cluster %q is not in this fleet's configuration, or not selected", c)}
		}
		notHere = append(notHere, c)
	}
	if len(notHere) > 0 {
		return request.Failure(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			fmt.Sprintf("%d of the %d clusters asked for are not cached here yet: %s", len(notHere), len(q.Only), strings.Join(notHere, ", ")))
	}
	for _, f := range res.Clusters {
		if phase := f.ResourcePhase; phase != clusters.PhaseSynced && (phase != "" || f.Phase != clusters.PhaseSynced) {
			return request.Failure(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
				fmt.Sprintf("cluster %s is %s here, not Synced yet", f.Cluster, f.Phase))
		}
	}
	return nil
}

// configured reports whether the query may select cluster, a cluster this daemon does not
// cache: one of the fleet's configured clusters that other replicas cache, visible to the
// caller and matched by the cluster parameter. Without sharding every configured cluster
// is cached here, and an answer lists it even before it has started.
func (a *api) configured(q aggregator.Query, cluster string) bool {
	if a.opts.Sharding == nil {
		return false
	}
	if q.Scope != nil && !q.Scope.SeesCluster(cluster) || q.Clusters != "" && !glob.Match(q.Clusters, cluster) {
		return false
	}
	_, found := slices.BinarySearch(a.opts.Sharding.All(), cluster)
	return found
}

// appendLine appends line as json.Marshal writes it; the object, already JSON, is spliced
// in rather than validated and copied again.
func appendLine(dst []byte, line watchLine) ([]byte, error) {
	if line.Error != nil {
		raw, err := json.Marshal(line)
		return append(dst, raw...), err
	}
	dst = append(dst, `{"type":`...)
	dst = wire.AppendString(dst, string(line.Type))
	for _, f := range []struct{ name, value string }{{`,"cluster":`, line.Cluster}, {`,"resourceVersion":`, line.ResourceVersion}, {`,"cursor":`, line.Cursor}} {
		if f.value != "" {
			dst = append(dst, f.name...)
			dst = wire.AppendString(dst, f.value)
		}
	}
	if len(line.Object) > 0 {
		dst = append(dst, `,"object":`...)
		dst = append(dst, line.Object...)
	}
	return append(dst, '}'), nil
}

// toLine converts an event; the object's JSON is appended to objBuf.
func toLine(ev watch.Event, objBuf []byte) (watchLine, error) {
	switch o := ev.Object.(type) {
	case *aggregator.WatchItem:
		line := watchLine{Type: ev.Type, Cursor: o.Cursor}
		if ev.Type == watch.Bookmark {
			return line, nil
		}
		line.Cluster, line.ResourceVersion = o.Cluster, strconv.FormatUint(o.RV, 10)
		raw, err := wire.AppendPlainObject(objBuf, o.Item)
		line.Object = raw
		return line, err
	default:
		if st, ok := ev.Object.(*metav1.Status); ok {
			return watchLine{Type: watch.Error, Error: &request.APIError{Code: int(st.Code), Reason: string(st.Reason), Message: st.Message}}, nil
		}
		return watchLine{}, fmt.Errorf("unexpected watch object %T", ev.Object)
	}
}
