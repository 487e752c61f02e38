package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/glob"
	"github.com/fleetcache/fleetcache/internal/wire"
)

// ClusterScopedNamespace stands for "no namespace" in object paths:
// /api/v1/objects/{cluster}/nodes/_/{name}.
const ClusterScopedNamespace = "_"

// badParam is a 400 that names the parameter.
type badParam struct{ name, msg string }

func (e badParam) Error() string { return fmt.Sprintf("query parameter %q: %s", e.name, e.msg) }

// parseQuery reads the parameters every query endpoint shares.
func (a *api) parseQuery(r *http.Request, paging bool) (aggregator.Query, error) {
	v := r.URL.Query()
	for name := range v {
		if name == "" {
			return aggregator.Query{}, badParam{"(unnamed)", "a parameter without a name (a stray '=' or '&'?)"}
		}
		if !knownParams[name] {
			return aggregator.Query{}, badParam{name, "unknown parameter (see docs/api.md)"}
		}
	}
	q := aggregator.Query{Resource: v.Get("resource"), Clusters: v.Get("cluster"), Namespace: v.Get("namespace")}
	if q.Resource == "" {
		return q, badParam{"resource", "required, e.g. resource=pods or resource=deployments.apps"}
	}
	if err := a.secretsAllowed(q.Resource); err != nil {
		return q, err
	}
	q.Scope = scopeOf(r)
	if s := v.Get("only"); s != "" {
		q.Only = strings.Split(s, ",")
	}
	if q.Clusters != "" {
		if err := glob.Validate(q.Clusters); err != nil {
			return q, badParam{"cluster", "not a valid glob: " + err.Error()}
		}
	}
	if q.Namespace != "" {
		if msgs := validation.IsDNS1123Label(q.Namespace); len(msgs) > 0 {
			return q, badParam{"namespace", strings.Join(msgs, "; ")}
		}
	}
	var err error
	if q.LabelSelector, err = labels.Parse(v.Get("labelSelector")); err != nil {
		return q, badParam{"labelSelector", err.Error()}
	}
	if q.FieldSelector, err = fields.ParseSelector(v.Get("fieldSelector")); err != nil {
		return q, badParam{"fieldSelector", err.Error()}
	}
	if !paging {
		return q, nil
	}
	q.Limit = a.opts.DefaultLimit
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		switch {
		case err != nil:
			return q, badParam{"limit", fmt.Sprintf("%q is not a number", s)}
		case n < 1 || n > a.opts.MaxLimit:
			return q, badParam{"limit", fmt.Sprintf("must be between 1 and %d, got %d", a.opts.MaxLimit, n)}
		}
		q.Limit = n
	}
	q.Continue = v.Get("continue")
	q.After = v.Get("after")
	return q, nil
}

var knownParams = map[string]bool{
	"resource": true, "cluster": true, "namespace": true, "labelSelector": true, "fieldSelector": true,
	"limit": true, "continue": true, "groupBy": true, "cursor": true, "pretty": true, "format": true,
	// Used between sharded replicas (see internal/sharding), harmless from anyone: they
	// only narrow or position a query.
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
		writeQueryError(w, err)
		return
	}
	v := r.URL.Query()
	if v.Has("groupBy") || v.Has("cursor") {
		writeQueryError(w, badParam{"groupBy/cursor", "not accepted by /api/v1/objects (see /api/v1/count and /api/v1/watch)"})
		return
	}
	format := v.Get("format")
	if format != "" && format != "table" {
		writeQueryError(w, badParam{"format", fmt.Sprintf("%q: want table, or none for objects", format)})
		return
	}
	res, err := a.ix.List(q)
	if err != nil {
		writeQueryError(w, err)
		return
	}
	a.writeList(w, r, res, format == "table")
}

// writeList streams an ObjectList: the items (objects, or a Table's rows) are written as
// they are encoded, and the page is cut short, with a continue token, once the items
// reach MaxResponseBytes.
func (a *api) writeList(w http.ResponseWriter, r *http.Request, res *aggregator.ListResult, asTable bool) {
	head, err := json.Marshal(listHead{Kind: "ObjectList", Resource: res.Resource, Clusters: res.Clusters, Partial: res.Partial})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	var enc wire.EncodeFunc
	var table *wire.Table
	if asTable {
		// One Table for the page: its columns are the resource's, whatever the items.
		table = wire.NewTable(res.Resource, wire.IncludeName)
		now := time.Now()
		enc = func(dst []byte, i int) ([]byte, error) { return table.AppendRow(dst, res.Items[i], now) }
	} else {
		enc = func(dst []byte, i int) ([]byte, error) {
			it := res.Items[i]
			dst = append(dst, `{"cluster":`...)
			dst = wire.AppendString(dst, it.Cluster)
			dst = append(dst, `,"object":`...)
			dst, err := wire.AppendPlainObject(dst, it)
			return append(dst, '}'), err
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	var out io.Writer = w
	var pretty *bytes.Buffer
	if p := r.URL.Query().Get("pretty"); p != "" && p != "false" && p != "0" {
		pretty = &bytes.Buffer{} // indenting needs the whole answer: for people, not for bulk
		out = pretty
	}
	bw := bufio.NewWriterSize(out, 32<<10)
	// framing=lines (between sharded replicas): the head, each item, and the continue
	// token on lines of their own, so that a router splits the answer without parsing it.
	lines := r.URL.Query().Get("framing") == "lines"
	switch {
	case lines:
		_, _ = bw.Write(head[:len(head)-1])
		if asTable {
			cols, _ := json.Marshal(table.Columns())
			_, _ = bw.WriteString(`,"columnDefinitions":`)
			_, _ = bw.Write(cols)
		}
		_, _ = bw.WriteString("}\n")
	case asTable:
		_, _ = bw.Write(head[:len(head)-1]) // without its closing brace
		_, _ = bw.WriteString(`,"table":`)
		_, _ = bw.Write(table.Start(nil, "", ""))
	default:
		_, _ = bw.Write(head[:len(head)-1])
		_, _ = bw.WriteString(`,"items":[`)
	}
	size, cont := 0, res.Continue
	var compact bytes.Buffer
	err = wire.Stream(r.Context(), len(res.Items), enc, func(i int, item []byte) bool {
		if size+len(item) > a.opts.MaxResponseBytes && i > 0 {
			// Bound the response: stop here and let the client continue after the last item.
			cont = res.ContinueAfter(i - 1)
			return false
		}
		size += len(item)
		if lines && bytes.IndexByte(item, '\n') >= 0 {
			compact.Reset() // a custom resource's stored JSON may hold newlines
			if json.Compact(&compact, item) == nil {
				item = compact.Bytes()
			}
		}
		if lines {
			_, err := bw.Write(item)
			_ = bw.WriteByte('\n')
			return err == nil
		}
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		_, err := bw.Write(item)
		return err == nil
	})
	if err != nil {
		return // the status line is sent: a cut response is all a client can be told
	}
	if lines {
		// The last line says the answer is whole, with the position to resume from.
		_, _ = bw.WriteString(`{"continue":`)
		_, _ = bw.Write(wire.AppendString(nil, cont))
		_, _ = bw.WriteString("}\n")
		_ = bw.Flush()
		return
	}
	if asTable {
		_, _ = bw.Write(table.End(nil))
	} else {
		_ = bw.WriteByte(']')
	}
	if cont != "" {
		_, _ = bw.WriteString(`,"continue":`)
		_, _ = bw.Write(wire.AppendString(nil, cont))
	}
	_, _ = bw.WriteString("}\n")
	_ = bw.Flush()
	if pretty != nil {
		var indented bytes.Buffer
		if json.Indent(&indented, pretty.Bytes(), "", "  ") == nil {
			_, _ = indented.WriteTo(w)
		}
	}
}

func (a *api) secretsAllowed(resource string) error {
	if info, ok := a.ix.Resource(resource); ok && info.IsSecret() && !a.opts.ServeSecrets {
		return errSecretsOff
	}
	return nil
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("namespace")
	if ns == ClusterScopedNamespace {
		ns = ""
	}
	if err := a.secretsAllowed(r.PathValue("resource")); err != nil {
		writeQueryError(w, err)
		return
	}
	it, err := a.ix.Get(r.PathValue("cluster"), r.PathValue("resource"), ns, r.PathValue("name"), scopeOf(r))
	if err != nil {
		writeQueryError(w, err)
		return
	}
	raw, err := encodeObject(it)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	writeData(w, r, itemJSON{Cluster: it.Cluster, Object: raw})
}

func (a *api) count(w http.ResponseWriter, r *http.Request) {
	q, err := a.parseQuery(r, false)
	if err != nil {
		writeQueryError(w, err)
		return
	}
	var groupBy []string
	if s := r.URL.Query().Get("groupBy"); s != "" {
		groupBy = strings.Split(s, ",")
	}
	if err := aggregator.ValidateGroupBy(groupBy); err != nil {
		writeQueryError(w, badParam{"groupBy", err.Error()})
		return
	}
	res, err := a.ix.Count(q, groupBy)
	if err != nil {
		writeQueryError(w, err)
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
	Type            watch.EventType `json:"type"`
	Cluster         string          `json:"cluster,omitempty"`
	ResourceVersion string          `json:"resourceVersion,omitempty"`
	Cursor          string          `json:"cursor,omitempty"`
	Object          json.RawMessage `json:"object,omitempty"`
	Error           *apiError       `json:"error,omitempty"`
}

func (a *api) watch(w http.ResponseWriter, r *http.Request) {
	q, err := a.parseQuery(r, false)
	if err != nil {
		writeQueryError(w, err)
		return
	}
	var from aggregator.Cursor
	if s := r.URL.Query().Get("cursor"); s != "" {
		if from, err = aggregator.ParseCursor(s); err != nil {
			if errors.Is(err, aggregator.ErrExpired) {
				writeQueryError(w, err) // 410: list again
			} else {
				writeQueryError(w, badParam{"cursor", err.Error()})
			}
			return
		}
	}
	if len(q.Only) > 0 {
		// A sharding router takes a cluster over from this replica's watch only once the
		// cluster is synced here: before that its "current state" would be empty.
		probe := q
		probe.Limit = 1
		res, err := a.ix.List(probe)
		if err != nil {
			writeQueryError(w, err)
			return
		}
		if len(res.Clusters) < len(q.Only) {
			writeError(w, http.StatusServiceUnavailable, "NotReady", fmt.Sprintf("%d of the %d clusters asked for are not cached here yet", len(q.Only)-len(res.Clusters), len(q.Only)))
			return
		}
		for _, f := range res.Clusters {
			if phase := f.ResourcePhase; phase != clusters.PhaseSynced && (phase != "" || f.Phase != clusters.PhaseSynced) {
				writeError(w, http.StatusServiceUnavailable, "NotReady", fmt.Sprintf("cluster %s is %s here, not Synced yet", f.Cluster, f.Phase))
				return
			}
		}
	}
	// initialEvents=true starts with the current state (ADDED events, then the first
	// BOOKMARK): what a sharding router needs when a cluster moves to another replica.
	wi, err := a.ix.WatchWith(r.Context(), q, aggregator.WatchOptions{From: from, InitialEvents: r.URL.Query().Get("initialEvents") == "true"})
	if err != nil {
		writeQueryError(w, err)
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
	flusher, _ := w.(http.Flusher)
	rc := http.NewResponseController(w)
	var buf, objBuf []byte // one line at a time, reused
	write := func(line watchLine) error {
		raw, err := appendLine(buf[:0], line)
		if err != nil {
			return err
		}
		buf = raw
		// A client that stops reading is disconnected instead of holding the stream.
		_ = rc.SetWriteDeadline(time.Now().Add(a.opts.Limits.StreamWriteTimeout))
		if sse {
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", strings.ToLower(string(line.Type)), raw)
		} else {
			_, err = w.Write(append(raw, '\n'))
		}
		if flusher != nil {
			flusher.Flush()
		}
		return err
	}
	// A bookmark now and then keeps proxies from closing an idle stream and gives the
	// client a fresh cursor.
	heartbeat := time.NewTicker(30 * time.Second)
	defer heartbeat.Stop()
	var lastCursor string
	for {
		select {
		case <-r.Context().Done():
			return
		case <-a.streams.Done():
			return // shutting down: end the stream cleanly
		case <-heartbeat.C:
			if err := write(watchLine{Type: watch.Bookmark, Cursor: lastCursor}); err != nil {
				return
			}
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return
			}
			line, err := toLine(ev, objBuf[:0])
			objBuf = line.Object
			if err != nil {
				line = watchLine{Type: watch.Error, Error: &apiError{Code: 500, Reason: "InternalError", Message: err.Error()}}
			}
			if line.Cursor != "" {
				lastCursor = line.Cursor
			}
			if err := write(line); err != nil {
				return
			}
		}
	}
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
			return watchLine{Type: watch.Error, Error: &apiError{Code: int(st.Code), Reason: string(st.Reason), Message: st.Message}}, nil
		}
		return watchLine{}, fmt.Errorf("unexpected watch object %T", ev.Object)
	}
}
