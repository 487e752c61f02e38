package kubeapi

import (
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
	_ = res.Stream(w, request.ListEncoder{
		Head: t.StartRows(nil),
		Item: func(dst []byte, it aggregator.Item) ([]byte, error) { return t.AppendRow(dst, it, now) },
		Tail: func(dst []byte, cont string) []byte {
			return append(t.EndRows(dst, rv, wrapContinue(rv, cont)), '\n')
		},
	})
}

// writeObjectList streams a list as a <Kind>List of objects tagged with their cluster.
func writeObjectList(w http.ResponseWriter, info aggregator.ResourceInfo, res *request.Answer, rv string) {
	w.Header().Set("Content-Type", "application/json")
	head := append([]byte(`{"kind":`), wire.AppendString(nil, info.Kind+"List")...)
	head = append(head, `,"apiVersion":`...)
	head = wire.AppendString(head, info.APIVersion)
	head = append(head, `,"items":[`...)
	_ = res.Stream(w, request.ListEncoder{
		Head: head,
		Item: wire.AppendObject,
		Tail: func(dst []byte, cont string) []byte {
			dst = wire.AppendListMeta(append(dst, "],"...), rv, wrapContinue(rv, cont))
			return append(dst, "}\n"...)
		},
	})
}
