package kubeapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/request"
	"github.com/fleetcache/fleetcache/internal/wire"
)

// Lists are streamed through the pipeline (request.Answer.Stream), which cuts them at the
// response cap: the list's metadata, which holds the continue token, follows the items.

// writeTableList streams a list as a Table, row by row.
func writeTableList(w http.ResponseWriter, r *http.Request, info aggregator.ResourceInfo, res *request.Answer, rv string) {
	t := wire.NewTable(info, includeObject(r))
	now := time.Now()
	w.Header().Set("Content-Type", "application/json")
	_ = res.Stream(w, frame(r, w, request.ListEncoder{
		Head: t.StartRows(nil),
		Item: func(dst []byte, it aggregator.Item) ([]byte, error) { return t.AppendRow(dst, it, now) },
		Tail: func(dst []byte, cont string) []byte {
			return append(t.EndRows(dst, rv, wrapContinue(rv, cont)), '\n')
		},
	}, rv))
}

// writeObjectList streams a list as a <Kind>List of objects tagged with their cluster.
func writeObjectList(w http.ResponseWriter, r *http.Request, info aggregator.ResourceInfo, res *request.Answer, rv string) {
	w.Header().Set("Content-Type", "application/json")
	head := append([]byte(`{"kind":`), wire.AppendString(nil, info.Kind+"List")...)
	head = append(head, `,"apiVersion":`...)
	head = wire.AppendString(head, info.APIVersion)
	head = append(head, `,"items":[`...)
	_ = res.Stream(w, frame(r, w, request.ListEncoder{
		Head: head,
		Item: wire.AppendObject,
		Tail: func(dst []byte, cont string) []byte {
			dst = wire.AppendListMeta(append(dst, "],"...), rv, wrapContinue(rv, cont))
			return append(dst, "}\n"...)
		},
	}, rv))
}

// frame returns enc unchanged, or, for framing=lines (what a sharding router asks the
// replicas that cache the clusters it merges), in lines a router splits and merges
// without parsing them:
//
//	h<the list's opening, up to its first item>
//	i"<cluster>""<namespace>""<name>"<item>     one per item, in cluster, namespace, name order
//	t<the list's metadata: resourceVersion and continue>
//
// The position is three JSON strings, so any name frames safely.
func frame(r *http.Request, w http.ResponseWriter, enc request.ListEncoder, rv string) request.ListEncoder {
	if r.URL.Query().Get("framing") != "lines" {
		return enc
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	item := enc.Item
	return request.ListEncoder{
		Head: append(append([]byte{'h'}, enc.Head...), '\n'),
		Sep:  '\n',
		Item: func(dst []byte, it aggregator.Item) ([]byte, error) {
			dst = append(dst, 'i')
			dst = wire.AppendString(dst, it.Cluster)
			dst = wire.AppendString(dst, it.Object.Namespace)
			dst = wire.AppendString(dst, it.Object.Name)
			start := len(dst)
			dst, err := item(dst, it)
			if err == nil && bytes.IndexByte(dst[start:], '\n') >= 0 {
				var c bytes.Buffer // a custom resource's stored JSON may hold line breaks
				if json.Compact(&c, dst[start:]) == nil {
					dst = append(dst[:start], c.Bytes()...)
				}
			}
			return dst, err
		},
		Tail: func(dst []byte, cont string) []byte {
			dst = append(dst, "\nt"...)
			return append(wire.AppendListMeta(dst, rv, wrapContinue(rv, cont)), '\n')
		},
	}
}
