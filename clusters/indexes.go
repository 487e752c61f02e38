package clusters

import (
	"fmt"
	"reflect"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/jsonpath"
)

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
