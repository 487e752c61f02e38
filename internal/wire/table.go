package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/util/jsonpath"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
)

// IncludeObject is what a Table row carries in its object field, as the apiserver's
// includeObject parameter says.
type IncludeObject string

const (
	// IncludeMetadata (the default) is a PartialObjectMetadata: what kubectl needs to
	// name the row (-o name, --show-labels).
	IncludeMetadata IncludeObject = "Metadata"
	// IncludeFull is the whole object (kubectl --sort-by asks for it).
	IncludeFull IncludeObject = "Object"
	// IncludeNone is no object.
	IncludeNone IncludeObject = "None"
	// IncludeName is a PartialObjectMetadata with the name and namespace only: all a
	// table printer reads (the CLI's rows).
	IncludeName IncludeObject = "Name"
)

// Table is one resource's table: CLUSTER, NAME, the kind's columns (as the apiserver
// prints them) or a custom resource's additionalPrinterColumns, and AGE.
type Table struct {
	columns []metav1.TableColumnDefinition
	// age is the index in columns of the age computed from creationTimestamp; -1 when
	// a custom resource defines its own.
	age int
	// crd are a custom resource's columns, evaluated on the decoded object; nil for
	// built-in kinds, whose cells were computed when they were cached.
	crd     []crdColumn
	include IncludeObject
}

type crdColumn struct {
	jp   *jsonpath.JSONPath
	date bool
}

// NewTable returns info's table.
func NewTable(info aggregator.ResourceInfo, include IncludeObject) *Table {
	t := &Table{age: -1, include: include}
	if t.include == "" {
		t.include = IncludeMetadata
	}
	t.columns = []metav1.TableColumnDefinition{
		{Name: "Cluster", Type: "string", Description: "The cluster the object is in (fleetcache)."},
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
	}
	if len(info.Columns) > 0 {
		hasAge := false
		for _, c := range info.Columns {
			expr := c.JSONPath
			if !strings.HasPrefix(expr, "{") {
				expr = "{" + expr + "}"
			}
			jp := jsonpath.New(c.Name).AllowMissingKeys(true)
			if err := jp.Parse(expr); err != nil {
				continue
			}
			hasAge = hasAge || strings.EqualFold(c.Name, clusters.ColumnAge)
			t.crd = append(t.crd, crdColumn{jp: jp, date: c.Type == "date"})
			t.columns = append(t.columns, metav1.TableColumnDefinition{Name: c.Name, Type: c.Type, Format: c.Format, Description: c.Description, Priority: c.Priority})
		}
		if !hasAge {
			t.age = len(t.columns)
			t.columns = append(t.columns, metav1.TableColumnDefinition{Name: clusters.ColumnAge, Type: "date", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]})
		}
		return t
	}
	gv, _ := schema.ParseGroupVersion(info.APIVersion)
	cols, _ := clusters.TableColumns(schema.GroupKind{Group: gv.Group, Kind: info.Kind})
	for _, c := range cols {
		if c.Name == clusters.ColumnAge {
			t.age = len(t.columns)
		}
		t.columns = append(t.columns, c)
	}
	return t
}

// Columns are the table's column definitions.
func (t *Table) Columns() []metav1.TableColumnDefinition { return t.columns }

// Start appends the table's opening, up to the first row, to dst.
func (t *Table) Start(dst []byte, resourceVersion, cont string) []byte {
	dst = append(dst, `{"kind":"Table","apiVersion":"meta.k8s.io/v1",`...)
	dst = AppendListMeta(dst, resourceVersion, cont)
	dst = append(dst, `,"columnDefinitions":`...)
	cols, _ := json.Marshal(t.columns)
	dst = append(dst, cols...)
	return append(dst, `,"rows":[`...)
}

// End closes what Start opened.
func (t *Table) End(dst []byte) []byte { return append(dst, "]}"...) }

// AppendRow appends one row's JSON to dst; now is the time ages are computed for.
func (t *Table) AppendRow(dst []byte, it aggregator.Item, now time.Time) ([]byte, error) {
	o := it.Object
	dst = append(dst, `{"cells":[`...)
	dst = AppendString(dst, it.Cluster)
	dst = append(dst, ',')
	dst = AppendString(dst, o.Name)
	var cells []clusters.Cell
	if t.crd != nil {
		var err error
		if cells, err = t.crdCells(o, now); err != nil {
			return dst, err
		}
	} else {
		var buf [12]clusters.Cell
		cells = o.AppendCells(buf[:0], now)
	}
	ci := 0
	for i := 2; i < len(t.columns); i++ {
		dst = append(dst, ',')
		if i == t.age {
			dst = AppendString(dst, age(o.CreationTimestamp.Time, now))
			continue
		}
		if ci >= len(cells) {
			dst = AppendString(dst, "") // an object cached before its kind had this column
			continue
		}
		c := cells[ci]
		ci++
		if c.Number {
			dst = appendInt(dst, c.Text)
		} else {
			dst = AppendString(dst, c.Text)
		}
	}
	dst = append(dst, ']')
	switch t.include {
	case IncludeFull:
		dst = append(dst, `,"object":`...)
		var err error
		if dst, err = AppendObject(dst, it); err != nil {
			return dst, err
		}
	case IncludeMetadata:
		dst = append(dst, `,"object":`...)
		dst = appendPartialMetadata(dst, it)
	case IncludeName:
		dst = append(dst, `,"object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":`...)
		dst = AppendString(dst, o.Name)
		if o.Namespace != "" {
			dst = append(dst, `,"namespace":`...)
			dst = AppendString(dst, o.Namespace)
		}
		dst = append(dst, "}}"...)
	default:
		dst = append(dst, `,"object":null`...) // as encoding/json writes an empty RawExtension
	}
	return append(dst, '}'), nil
}

func age(created, now time.Time) string {
	if created.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(created))
}

// appendPartialMetadata appends the row's PartialObjectMetadata: the metadata fleetcache
// keeps decoded, and the cluster annotation.
func appendPartialMetadata(dst []byte, it aggregator.Item) []byte {
	m := &it.Object.ObjectMeta
	dst = append(dst, `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":`...)
	dst = AppendString(dst, m.Name)
	if m.Namespace != "" {
		dst = append(dst, `,"namespace":`...)
		dst = AppendString(dst, m.Namespace)
	}
	if m.UID != "" {
		dst = append(dst, `,"uid":`...)
		dst = AppendString(dst, string(m.UID))
	}
	if m.ResourceVersion != "" {
		dst = append(dst, `,"resourceVersion":`...)
		dst = AppendString(dst, m.ResourceVersion)
	}
	if !m.CreationTimestamp.IsZero() { // omitzero
		dst = append(dst, `,"creationTimestamp":`...)
		dst = appendTime(dst, m.CreationTimestamp.Time)
	}
	if m.DeletionTimestamp != nil {
		dst = append(dst, `,"deletionTimestamp":`...)
		dst = appendTime(dst, m.DeletionTimestamp.Time)
	}
	if len(m.Labels) > 0 {
		dst = append(dst, `,"labels":`...)
		dst = appendStringMap(dst, m.Labels, "", "")
	}
	dst = append(dst, `,"annotations":`...)
	dst = appendStringMap(dst, nil, ClusterAnnotation, it.Cluster)
	return append(dst, "}}"...)
}

// crdCells evaluates a custom resource's printer columns on its decoded object.
func (t *Table) crdCells(o *clusters.Object, now time.Time) ([]clusters.Cell, error) {
	obj, err := o.Decode()
	if err != nil {
		return nil, err
	}
	var u map[string]any
	if uo, ok := obj.(*unstructured.Unstructured); ok {
		u = uo.Object
	} else if u, err = runtime.DefaultUnstructuredConverter.ToUnstructured(obj); err != nil {
		return nil, err
	}
	cells := make([]clusters.Cell, 0, len(t.crd))
	for _, c := range t.crd {
		cells = append(cells, crdCell(c, u, now))
	}
	return cells, nil
}

func crdCell(c crdColumn, u map[string]any, now time.Time) clusters.Cell {
	results, err := c.jp.FindResults(u)
	if err != nil || len(results) == 0 || len(results[0]) == 0 {
		return clusters.Cell{Text: "<none>"}
	}
	v := results[0][0].Interface()
	if c.date {
		if ts, err := time.Parse(time.RFC3339, fmt.Sprint(v)); err == nil {
			return clusters.Cell{Text: duration.HumanDuration(now.Sub(ts))}
		}
	}
	switch n := v.(type) {
	case int64:
		return clusters.Cell{Text: fmt.Sprint(n), Number: true}
	case float64:
		if n == float64(int64(n)) {
			return clusters.Cell{Text: fmt.Sprint(int64(n)), Number: true}
		}
	}
	return clusters.Cell{Text: fmt.Sprint(v)}
}

// Build returns the whole table for items as a metav1.Table: for single objects and
// watch events. Lists stream with Start, AppendRow and End.
func (t *Table) Build(items []aggregator.Item, resourceVersion string, now time.Time) (*metav1.Table, error) {
	buf := t.Start(nil, resourceVersion, "")
	for i, it := range items {
		if i > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, err = t.AppendRow(buf, it, now); err != nil {
			return nil, err
		}
	}
	buf = t.End(buf)
	out := &metav1.Table{}
	if err := json.Unmarshal(buf, out); err != nil {
		return nil, fmt.Errorf("decode table: %w", err)
	}
	return out, nil
}
