package clusters

import (
	"fmt"
	"reflect"
	"sync/atomic"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/jsonpath"
)

// InformerRef identifies one informer run: which cluster, resource and namespace scope it
// caches, plus a number unique to this run, so that a consumer can tell a restarted
// informer's objects from the previous run's.
type InformerRef struct {
	Cluster    string
	Resource   string // "pods", "deployments.apps"
	Namespace  string // "" for all namespaces
	Kind       string
	APIVersion string
	Namespaced bool
	// Names are what the resource answers to: plural, singular, short names (from
	// discovery), in lower case.
	Names      []string
	Singular   string
	ShortNames []string
	// Columns are a custom resource's additionalPrinterColumns (from its CRD), for
	// kubectl tables; empty for built-in resources.
	Columns []PrinterColumn
	ID      uint64
}

// PrinterColumn is one additionalPrinterColumn of a CRD.
type PrinterColumn struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Format      string `json:"format,omitempty"`
	Description string `json:"description,omitempty"`
	Priority    int32  `json:"priority,omitempty"`
	JSONPath    string `json:"jsonPath"`
}

// EventHandler receives every change to every cached object of every cluster; the
// aggregator implements it. Calls for one informer are sequential; calls for different
// informers are concurrent. Objects are shared and must not be modified.
type EventHandler interface {
	OnAdd(ref *InformerRef, obj *Object)
	OnUpdate(ref *InformerRef, old, obj *Object)
	OnDelete(ref *InformerRef, obj *Object)
	// OnStop says the informer stopped (cluster removed or restarted, resource no longer
	// served): every object it delivered leaves the cache.
	OnStop(ref *InformerRef)
}

var informerIDs atomic.Uint64

// handlerFuncs adapts client-go's handler to EventHandler.
func handlerFuncs(ref *InformerRef, h EventHandler) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o, ok := obj.(*Object); ok {
				h.OnAdd(ref, o)
			}
		},
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*Object)
			n, ok2 := obj.(*Object)
			if ok1 && ok2 {
				h.OnUpdate(ref, o, n)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if o, ok := obj.(*Object); ok {
				h.OnDelete(ref, o)
			}
		},
	}
}

// IndexSpec declares an extra index over one resource: a name and a client-go JSONPath
// expression evaluated on each object when it is stored (e.g. "{.spec.nodeName}",
// "{.spec.containers[*].image}"). A field selector on a field path equal to an index's
// name (status.phase, spec.nodeName) is answered from the index without decoding.
type IndexSpec struct {
	Name     string `json:"name"`
	JSONPath string `json:"jsonPath"`
}

// DefaultIndexes are the indexes every configuration gets for these resources.
var DefaultIndexes = map[string][]IndexSpec{
	"pods": {
		{Name: "spec.nodeName", JSONPath: "{.spec.nodeName}"},
		{Name: "status.phase", JSONPath: "{.status.phase}"},
		{Name: "images", JSONPath: "{.spec.containers[*].image}"},
	},
	"deployments.apps":  {{Name: "images", JSONPath: "{.spec.template.spec.containers[*].image}"}},
	"statefulsets.apps": {{Name: "images", JSONPath: "{.spec.template.spec.containers[*].image}"}},
	"daemonsets.apps":   {{Name: "images", JSONPath: "{.spec.template.spec.containers[*].image}"}},
	"replicasets.apps":  {{Name: "images", JSONPath: "{.spec.template.spec.containers[*].image}"}},
	"nodes":             {{Name: "spec.unschedulable", JSONPath: "{.spec.unschedulable}"}},
}

// Field is one extracted index value of an object. An index with several values (every
// container image) has several Fields of the same name.
type Field struct {
	Name, Value string
}

type compiledIndex struct {
	name string
	path *jsonpath.JSONPath // not safe for concurrent use: one per informer
	// typed computes the same values without reflection for the default indexes of
	// built-in types; nil when there is none or the object is unstructured.
	typed func(runtime.Object) ([]string, bool)
}

// typedIndexes are code paths for DefaultIndexes, measured to matter on ingest:
// client-go's JSONPath walks the object by reflection (about 40% of the transform's cost).
var typedIndexes = map[string]func(runtime.Object) ([]string, bool){
	"spec.nodeName": func(o runtime.Object) ([]string, bool) {
		p, ok := o.(*corev1.Pod)
		if !ok {
			return nil, false
		}
		return []string{p.Spec.NodeName}, true
	},
	"status.phase": func(o runtime.Object) ([]string, bool) {
		p, ok := o.(*corev1.Pod)
		if !ok {
			return nil, false
		}
		return []string{string(p.Status.Phase)}, true
	},
	"images": func(o runtime.Object) ([]string, bool) {
		var cs []corev1.Container
		switch t := o.(type) {
		case *corev1.Pod:
			cs = t.Spec.Containers
		case *appsv1.Deployment:
			cs = t.Spec.Template.Spec.Containers
		case *appsv1.StatefulSet:
			cs = t.Spec.Template.Spec.Containers
		case *appsv1.DaemonSet:
			cs = t.Spec.Template.Spec.Containers
		case *appsv1.ReplicaSet:
			cs = t.Spec.Template.Spec.Containers
		default:
			return nil, false
		}
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.Image
		}
		return out, true
	},
}

func compileIndexes(specs []IndexSpec) ([]compiledIndex, error) {
	out := make([]compiledIndex, 0, len(specs))
	for _, s := range specs {
		jp := jsonpath.New(s.Name).AllowMissingKeys(true)
		if err := jp.Parse(s.JSONPath); err != nil {
			return nil, fmt.Errorf("index %q: %w", s.Name, err)
		}
		ci := compiledIndex{name: s.Name, path: jp}
		if isDefault(s) {
			ci.typed = typedIndexes[s.Name]
		}
		out = append(out, ci)
	}
	return out, nil
}

// isDefault reports whether spec is one of DefaultIndexes (whose typed code paths compute
// exactly what its JSONPath does).
func isDefault(spec IndexSpec) bool {
	for _, specs := range DefaultIndexes {
		for _, d := range specs {
			if d == spec {
				return true
			}
		}
	}
	return false
}

// ValidateIndex reports whether expr is a JSONPath expression client-go can evaluate.
func ValidateIndex(expr string) error {
	return jsonpath.New("check").Parse(expr)
}

// extract evaluates the indexes on a decoded object (typed or unstructured).
func extract(indexes []compiledIndex, obj any) []Field {
	if len(indexes) == 0 {
		return nil
	}
	if u, ok := obj.(interface{ UnstructuredContent() map[string]any }); ok {
		obj = u.UnstructuredContent()
	}
	var out []Field
	for _, ix := range indexes {
		if ix.typed != nil {
			if ro, ok := obj.(runtime.Object); ok {
				if vals, ok := ix.typed(ro); ok {
					for _, v := range vals {
						out = append(out, Field{Name: ix.name, Value: v})
					}
					continue
				}
			}
		}
		results, err := ix.path.FindResults(obj)
		if err != nil {
			continue
		}
		for _, rs := range results {
			for _, v := range rs {
				if s, ok := fieldString(v); ok {
					out = append(out, Field{Name: ix.name, Value: s})
				}
			}
		}
	}
	return out
}

func fieldString(v reflect.Value) (string, bool) {
	for v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "", false
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.String:
		return v.String(), true
	case reflect.Bool, reflect.Int, reflect.Int32, reflect.Int64, reflect.Float64, reflect.Uint32, reflect.Uint64:
		return fmt.Sprint(v.Interface()), true
	}
	return "", false
}
