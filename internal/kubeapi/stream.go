package kubeapi

import (
	"bufio"
	"net/http"
	"time"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/wire"
)

// writeBuffer is how much of a streamed list is buffered before it is sent.
const writeBuffer = 32 << 10

// writeTableList streams a list's page as a Table, row by row.
func writeTableList(w http.ResponseWriter, r *http.Request, info aggregator.ResourceInfo, res *aggregator.ListResult, rv, continueToken string) {
	t := wire.NewTable(info, includeObject(r))
	now := time.Now()
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, writeBuffer)
	_, _ = bw.Write(t.Start(nil, rv, continueToken))
	err := wire.Stream(r.Context(), len(res.Items),
		func(dst []byte, i int) ([]byte, error) { return t.AppendRow(dst, res.Items[i], now) },
		func(i int, row []byte) bool {
			if i > 0 {
				_ = bw.WriteByte(',')
			}
			_, err := bw.Write(row)
			return err == nil
		})
	if err != nil {
		return // the status line is sent: a cut response is all a client can be told
	}
	_, _ = bw.Write(t.End(nil))
	_, _ = bw.Write([]byte{'\n'})
	_ = bw.Flush()
}

// writeObjectList streams a list's page as a <Kind>List of objects tagged with their
// cluster.
func writeObjectList(w http.ResponseWriter, r *http.Request, info aggregator.ResourceInfo, res *aggregator.ListResult, rv, continueToken string) {
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, writeBuffer)
	head := append([]byte(`{"kind":`), wireString(info.Kind+"List")...)
	head = append(head, `,"apiVersion":`...)
	head = append(head, wireString(info.APIVersion)...)
	head = append(head, `,"metadata":{"resourceVersion":`...)
	head = append(head, wireString(rv)...)
	if continueToken != "" {
		head = append(head, `,"continue":`...)
		head = append(head, wireString(continueToken)...)
	}
	head = append(head, `},"items":[`...)
	_, _ = bw.Write(head)
	err := wire.Stream(r.Context(), len(res.Items),
		func(dst []byte, i int) ([]byte, error) { return wire.AppendObject(dst, res.Items[i]) },
		func(i int, obj []byte) bool {
			if i > 0 {
				_ = bw.WriteByte(',')
			}
			_, err := bw.Write(obj)
			return err == nil
		})
	if err != nil {
		return
	}
	_, _ = bw.Write([]byte("]}\n"))
	_ = bw.Flush()
}

func wireString(s string) []byte { return wire.AppendString(nil, s) }
