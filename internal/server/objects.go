package server

import (
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/fleetcache/fleetcache/internal/glob"
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
	return q, nil
}

var knownParams = map[string]bool{
	"resource": true, "cluster": true, "namespace": true, "labelSelector": true, "fieldSelector": true,
	"limit": true, "continue": true, "groupBy": true, "cursor": true, "pretty": true,
}

// itemJSON is one object in a response, with its cluster.
type itemJSON struct {
	Cluster string          `json:"cluster"`
	Object  json.RawMessage `json:"object"`
}

func encodeObject(it aggregator.Item) (json.RawMessage, error) {
	obj, err := it.Object.Decode()
	if err != nil {
		return nil, err
	}
	return json.Marshal(obj)
}

type listResponse struct {
	Kind     string                  `json:"kind"`
	Resource aggregator.ResourceInfo `json:"resource"`
	Clusters []aggregator.Freshness  `json:"clusters"`
	Partial  bool                    `json:"partial"`
	Items    []itemJSON              `json:"items"`
	Continue string                  `json:"continue,omitempty"`
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	q, err := a.parseQuery(r, true)
	if err != nil {
		writeQueryError(w, err)
		return
	}
	if r.URL.Query().Has("groupBy") || r.URL.Query().Has("cursor") {
		writeQueryError(w, badParam{"groupBy/cursor", "not accepted by /api/v1/objects (see /api/v1/count and /api/v1/watch)"})
		return
	}
	res, err := a.ix.List(q)
	if err != nil {
		writeQueryError(w, err)
		return
	}
	resp := listResponse{Kind: "ObjectList", Resource: res.Resource, Clusters: res.Clusters, Partial: res.Partial, Items: make([]itemJSON, 0, len(res.Items)), Continue: res.Continue}
	size := 0
	for i, it := range res.Items {
		raw, err := encodeObject(it)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		if size+len(raw) > a.opts.MaxResponseBytes && i > 0 {
			// Bound the response: stop here and let the client continue after the last item.
			resp.Continue = res.ContinueAfter(i - 1)
			break
		}
		size += len(raw)
		resp.Items = append(resp.Items, itemJSON{Cluster: it.Cluster, Object: raw})
	}
	writeData(w, r, resp)
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
	wi, err := a.ix.Watch(r.Context(), q, from)
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
	write := func(line watchLine) error {
		raw, err := json.Marshal(line)
		if err != nil {
			return err
		}
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
			line, err := toLine(ev)
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

func toLine(ev watch.Event) (watchLine, error) {
	switch o := ev.Object.(type) {
	case *aggregator.WatchItem:
		line := watchLine{Type: ev.Type, Cursor: o.Cursor}
		if ev.Type == watch.Bookmark {
			return line, nil
		}
		line.Cluster, line.ResourceVersion = o.Cluster, strconv.FormatUint(o.RV, 10)
		raw, err := encodeObject(o.Item)
		line.Object = raw
		return line, err
	default:
		if st, ok := ev.Object.(*metav1.Status); ok {
			return watchLine{Type: watch.Error, Error: &apiError{Code: int(st.Code), Reason: string(st.Reason), Message: st.Message}}, nil
		}
		return watchLine{}, fmt.Errorf("unexpected watch object %T", ev.Object)
	}
}
