package wire

import "encoding/json"

// Lists whose end is decided while they are written (a response cut at its size cap)
// learn their continue token only after the last item: their metadata is written after
// the items. JSON objects' keys are unordered; every Kubernetes decoder reads them so.

// StartRows appends the table's opening without its metadata, up to the first row; EndRows
// closes it with the metadata.
func (t *Table) StartRows(dst []byte) []byte {
	dst = append(dst, `{"kind":"Table","apiVersion":"meta.k8s.io/v1","columnDefinitions":`...)
	cols, _ := json.Marshal(t.columns)
	dst = append(dst, cols...)
	return append(dst, `,"rows":[`...)
}

// EndRows closes what StartRows opened, with the list's resourceVersion and continue
// token.
func (t *Table) EndRows(dst []byte, resourceVersion, cont string) []byte {
	dst = append(dst, "],"...)
	return append(AppendListMeta(dst, resourceVersion, cont), '}')
}

// AppendListMeta appends a list's "metadata" member: its resourceVersion and, when the
// list continues, the continue token.
func AppendListMeta(dst []byte, resourceVersion, cont string) []byte {
	dst = append(dst, `"metadata":{`...)
	sep := false
	if resourceVersion != "" {
		dst = append(dst, `"resourceVersion":`...)
		dst = AppendString(dst, resourceVersion)
		sep = true
	}
	if cont != "" {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"continue":`...)
		dst = AppendString(dst, cont)
	}
	return append(dst, '}')
}
