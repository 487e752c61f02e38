package kubeapi

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/util/jsonpath"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
)

// column is one table column: its definition and how to compute a cell from the object.
type column struct {
	name     string
	priority int32 // 0: always shown; 1: with -o wide
	cell     func(u map[string]any) any
}

func str(u map[string]any, path ...string) string {
	v, _, _ := unstructured.NestedFieldNoCopy(u, path...)
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func num(u map[string]any, path ...string) int64 {
	v, _, _ := unstructured.NestedFieldNoCopy(u, path...)
	switch n := v.(type) {
	case int64:
		return n
	case float64:
		return int64(n)
	}
	return 0
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func containerImages(u map[string]any, path ...string) (names, images string) {
	cs, _, _ := unstructured.NestedSlice(u, path...)
	var n, i []string
	for _, c := range cs {
		cm, _ := c.(map[string]any)
		n = append(n, fmt.Sprint(cm["name"]))
		i = append(i, fmt.Sprint(cm["image"]))
	}
	return strings.Join(n, ","), strings.Join(i, ",")
}

func condition(u map[string]any, typ string) string {
	conds, _, _ := unstructured.NestedSlice(u, "status", "conditions")
	for _, c := range conds {
		cm, _ := c.(map[string]any)
		if cm["type"] == typ {
			return fmt.Sprint(cm["status"])
		}
	}
	return ""
}

// builtinColumns are the columns kubectl users know for the common kinds, after CLUSTER
// and NAME; every table ends with AGE.
var builtinColumns = map[string][]column{
	"Pod": {
		{"Ready", 0, func(u map[string]any) any {
			cs, _, _ := unstructured.NestedSlice(u, "status", "containerStatuses")
			ready := 0
			for _, c := range cs {
				if cm, _ := c.(map[string]any); cm["ready"] == true {
					ready++
				}
			}
			specs, _, _ := unstructured.NestedSlice(u, "spec", "containers")
			return fmt.Sprintf("%d/%d", ready, len(specs))
		}},
		{"Status", 0, func(u map[string]any) any {
			if str(u, "metadata", "deletionTimestamp") != "" {
				return "Terminating"
			}
			return orNone(str(u, "status", "phase"))
		}},
		{"Restarts", 0, func(u map[string]any) any {
			cs, _, _ := unstructured.NestedSlice(u, "status", "containerStatuses")
			var n int64
			for _, c := range cs {
				n += num(c.(map[string]any), "restartCount")
			}
			return n
		}},
		{"IP", 1, func(u map[string]any) any { return orNone(str(u, "status", "podIP")) }},
		{"Node", 1, func(u map[string]any) any { return orNone(str(u, "spec", "nodeName")) }},
	},
	"Deployment": {
		{"Ready", 0, func(u map[string]any) any {
			return fmt.Sprintf("%d/%d", num(u, "status", "readyReplicas"), num(u, "spec", "replicas"))
		}},
		{"Up-to-date", 0, func(u map[string]any) any { return num(u, "status", "updatedReplicas") }},
		{"Available", 0, func(u map[string]any) any { return num(u, "status", "availableReplicas") }},
		{"Containers", 1, func(u map[string]any) any {
			n, _ := containerImages(u, "spec", "template", "spec", "containers")
			return n
		}},
		{"Images", 1, func(u map[string]any) any {
			_, i := containerImages(u, "spec", "template", "spec", "containers")
			return i
		}},
	},
	"ReplicaSet": {
		{"Desired", 0, func(u map[string]any) any { return num(u, "spec", "replicas") }},
		{"Current", 0, func(u map[string]any) any { return num(u, "status", "replicas") }},
		{"Ready", 0, func(u map[string]any) any { return num(u, "status", "readyReplicas") }},
		{"Images", 1, func(u map[string]any) any {
			_, i := containerImages(u, "spec", "template", "spec", "containers")
			return i
		}},
	},
	"StatefulSet": {
		{"Ready", 0, func(u map[string]any) any {
			return fmt.Sprintf("%d/%d", num(u, "status", "readyReplicas"), num(u, "spec", "replicas"))
		}},
	},
	"DaemonSet": {
		{"Desired", 0, func(u map[string]any) any { return num(u, "status", "desiredNumberScheduled") }},
		{"Current", 0, func(u map[string]any) any { return num(u, "status", "currentNumberScheduled") }},
		{"Ready", 0, func(u map[string]any) any { return num(u, "status", "numberReady") }},
	},
	"Service": {
		{"Type", 0, func(u map[string]any) any { return str(u, "spec", "type") }},
		{"Cluster-IP", 0, func(u map[string]any) any { return orNone(str(u, "spec", "clusterIP")) }},
		{"Port(s)", 0, func(u map[string]any) any {
			ports, _, _ := unstructured.NestedSlice(u, "spec", "ports")
			var out []string
			for _, p := range ports {
				pm := p.(map[string]any)
				out = append(out, fmt.Sprintf("%v/%v", pm["port"], pm["protocol"]))
			}
			return orNone(strings.Join(out, ","))
		}},
	},
	"Node": {
		{"Status", 0, func(u map[string]any) any {
			if condition(u, "Ready") == "True" {
				return "Ready"
			}
			return "NotReady"
		}},
		{"Version", 0, func(u map[string]any) any { return orNone(str(u, "status", "nodeInfo", "kubeletVersion")) }},
	},
	"Namespace": {{"Status", 0, func(u map[string]any) any { return str(u, "status", "phase") }}},
	"ConfigMap": {{"Data", 0, func(u map[string]any) any {
		d, _, _ := unstructured.NestedMap(u, "data")
		b, _, _ := unstructured.NestedMap(u, "binaryData")
		return len(d) + len(b)
	}}},
	"Secret": {
		{"Type", 0, func(u map[string]any) any { return str(u, "type") }},
		{"Data", 0, func(u map[string]any) any { d, _, _ := unstructured.NestedMap(u, "data"); return len(d) }},
	},
	"Job": {{"Completions", 0, func(u map[string]any) any {
		return fmt.Sprintf("%d/%d", num(u, "status", "succeeded"), max(num(u, "spec", "completions"), 1))
	}}},
	"CronJob": {
		{"Schedule", 0, func(u map[string]any) any { return str(u, "spec", "schedule") }},
		{"Suspend", 0, func(u map[string]any) any { return str(u, "spec", "suspend") == "true" }},
	},
}

// crdColumns turns a CRD's additionalPrinterColumns into columns (date columns print as
// ages, as the apiserver prints them).
func crdColumns(cols []clusters.PrinterColumn) []column {
	var out []column
	for _, c := range cols {
		jp := jsonpath.New(c.Name).AllowMissingKeys(true)
		expr := c.JSONPath
		if !strings.HasPrefix(expr, "{") {
			expr = "{" + expr + "}"
		}
		if err := jp.Parse(expr); err != nil {
			continue
		}
		typ := c.Type
		out = append(out, column{name: c.Name, priority: c.Priority, cell: func(u map[string]any) any {
			results, err := jp.FindResults(u)
			if err != nil || len(results) == 0 || len(results[0]) == 0 {
				return "<none>"
			}
			v := results[0][0].Interface()
			if typ == "date" {
				if t, err := time.Parse(time.RFC3339, fmt.Sprint(v)); err == nil {
					return duration.HumanDuration(time.Since(t))
				}
			}
			return v
		}})
	}
	return out
}

// table builds a server-side Table: CLUSTER, NAME, the kind's columns, AGE.
func table(info aggregator.ResourceInfo, items []aggregator.Item, objs []runtime.Object, rv string) *metav1.Table {
	cols := builtinColumns[info.Kind]
	hasAge := false
	if len(info.Columns) > 0 {
		cols = crdColumns(info.Columns)
		for _, c := range info.Columns {
			hasAge = hasAge || strings.EqualFold(c.Name, "Age")
		}
	}
	t := &metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}, ListMeta: metav1.ListMeta{ResourceVersion: rv}}
	t.ColumnDefinitions = []metav1.TableColumnDefinition{
		{Name: "Cluster", Type: "string", Description: "The cluster the object is in (fleetcache)."},
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
	}
	for _, c := range cols {
		t.ColumnDefinitions = append(t.ColumnDefinitions, metav1.TableColumnDefinition{Name: c.name, Type: "string", Priority: c.priority})
	}
	if !hasAge {
		t.ColumnDefinitions = append(t.ColumnDefinitions, metav1.TableColumnDefinition{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]})
	}
	for i, obj := range objs {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			continue
		}
		if uo, ok := obj.(*unstructured.Unstructured); ok {
			u = uo.Object
		}
		m := items[i].Object
		cells := []any{items[i].Cluster, m.Name}
		for _, c := range cols {
			cells = append(cells, c.cell(u))
		}
		if !hasAge {
			cells = append(cells, duration.HumanDuration(time.Since(m.CreationTimestamp.Time)))
		}
		// kubectl reads namespace and name (and -o name) from the row's object metadata.
		pom := &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"},
			ObjectMeta: metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion, CreationTimestamp: m.CreationTimestamp, Labels: m.Labels, Annotations: map[string]string{ClusterAnnotation: items[i].Cluster}},
		}
		t.Rows = append(t.Rows, metav1.TableRow{Cells: cells, Object: runtime.RawExtension{Object: pom}})
	}
	return t
}
