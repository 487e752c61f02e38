package clusters

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/randfill"
)

// fieldKinds are the kinds fleetcache caches by default, with the field selectors the
// apiserver supports for each (besides metadata.name and metadata.namespace, which
// every kind has) and, for group-by, other paths people ask for.
var fieldKinds = []struct {
	resource string
	new      func() runtime.Object
	paths    []string
}{
	{"pods", func() runtime.Object { return &corev1.Pod{} }, []string{"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
		"spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName",
		"spec.priority", "spec.priorityClassName", "status.qosClass", "status.startTime", "spec.securityContext.runAsUser",
		"spec.overhead.cpu", "spec.nodeSelector.disktype", "spec.containers", "spec.containers.0.image", "metadata.labels.app",
		"metadata.annotations.team", "metadata.creationTimestamp", "metadata.deletionTimestamp", "metadata.generation", "metadata.uid"}},
	{"nodes", func() runtime.Object { return &corev1.Node{} }, []string{"spec.unschedulable", "spec.podCIDR", "status.nodeInfo.kubeletVersion",
		"status.capacity.cpu", "status.allocatable.memory", "spec.providerID"}},
	{"namespaces", func() runtime.Object { return &corev1.Namespace{} }, []string{"status.phase"}},
	{"services", func() runtime.Object { return &corev1.Service{} }, []string{"spec.clusterIP", "spec.type", "spec.externalTrafficPolicy",
		"spec.sessionAffinityConfig.clientIP.timeoutSeconds", "spec.allocateLoadBalancerNodePorts", "spec.ports"}},
	{"secrets", func() runtime.Object { return &corev1.Secret{} }, []string{"type", "immutable", "data.token"}},
	{"configmaps", func() runtime.Object { return &corev1.ConfigMap{} }, []string{"data.LOG_LEVEL", "binaryData.blob", "immutable"}},
	{"persistentvolumeclaims", func() runtime.Object { return &corev1.PersistentVolumeClaim{} }, []string{"spec.storageClassName",
		"spec.volumeName", "status.phase", "spec.resources.requests.storage", "status.capacity.storage"}},
	{"deployments.apps", func() runtime.Object { return &appsv1.Deployment{} }, []string{"spec.replicas", "status.replicas",
		"status.readyReplicas", "spec.strategy.type", "spec.strategy.rollingUpdate.maxSurge", "spec.paused", "spec.template.spec.schedulerName"}},
	{"replicasets.apps", func() runtime.Object { return &appsv1.ReplicaSet{} }, []string{"status.replicas", "spec.replicas", "status.fullyLabeledReplicas"}},
	{"statefulsets.apps", func() runtime.Object { return &appsv1.StatefulSet{} }, []string{"spec.serviceName", "status.currentRevision",
		"spec.updateStrategy.rollingUpdate.maxUnavailable", "spec.persistentVolumeClaimRetentionPolicy.whenDeleted"}},
	{"daemonsets.apps", func() runtime.Object { return &appsv1.DaemonSet{} }, []string{"status.numberReady", "spec.updateStrategy.type"}},
	{"jobs.batch", func() runtime.Object { return &batchv1.Job{} }, []string{"status.successful", "status.succeeded", "spec.completions",
		"spec.suspend", "status.completionTime", "spec.template.spec.restartPolicy"}},
	{"cronjobs.batch", func() runtime.Object { return &batchv1.CronJob{} }, []string{"spec.schedule", "spec.suspend", "status.lastScheduleTime",
		"spec.jobTemplate.spec.backoffLimit"}},
	{"ingresses.networking.k8s.io", func() runtime.Object { return &networkingv1.Ingress{} }, []string{"spec.ingressClassName",
		"spec.defaultBackend.service.port.number", "spec.defaultBackend.service.name"}},
	// Not cached by default, often configured; their MicroTimes are read by decoding.
	{"leases.coordination.k8s.io", func() runtime.Object { return &coordinationv1.Lease{} }, []string{"spec.holderIdentity",
		"spec.renewTime", "spec.leaseDurationSeconds"}},
	{"events", func() runtime.Object { return &corev1.Event{} }, []string{"involvedObject.kind", "involvedObject.name", "reason",
		"reportingComponent", "source", "type", "eventTime", "series.lastObservedTime", "count"}},
}

var fieldQuantities = []string{"0", "1", "250m", "1.5", "128Mi", "1Gi", "2e3", "100k", "0.5", "1001m", "12345678901234567890"}

// fieldFiller fills objects at random, zero values and nil pointers included, and strings
// that need escaping or are not valid UTF-8.
func fieldFiller(seed int64) *randfill.Filler {
	return randfill.NewWithSeed(seed).NilChance(0.3).NumElements(0, 3).Funcs(
		func(q *resource.Quantity, c randfill.Continue) {
			*q = resource.MustParse(fieldQuantities[c.Intn(len(fieldQuantities))])
		},
		func(t *metav1.Time, c randfill.Continue) {
			if c.Intn(4) == 0 {
				*t = metav1.Time{}
				return
			}
			*t = metav1.Unix(c.Int63n(4e9)-1e9, 0)
		},
		func(t *metav1.MicroTime, c randfill.Continue) {
			*t = metav1.NewMicroTime(time.Unix(c.Int63n(4e9), c.Int63n(1e9)))
		},
		func(v *intstr.IntOrString, c randfill.Continue) {
			if c.Intn(2) == 0 {
				*v = intstr.FromInt32(int32(c.Uint32()))
			} else {
				*v = intstr.FromString(c.String(8))
			}
		},
		func(r *runtime.RawExtension, c randfill.Continue) {
			*r = runtime.RawExtension{Raw: []byte(fmt.Sprintf(`{"n":%d}`, c.Intn(100)))}
		},
		func(f *metav1.FieldsV1, c randfill.Continue) { *f = metav1.FieldsV1{Raw: []byte(`{"f:a":{}}`)} },
		func(s *string, c randfill.Continue) {
			const chars = "ab<>&\"\\\n\x01é."
			b := make([]byte, c.Intn(12))
			for i := range b {
				b[i] = chars[c.Intn(len(chars))]
			}
			*s = string(b)
		},
		func(i *int32, c randfill.Continue) {
			if c.Intn(3) > 0 {
				*i = int32(c.Uint32())
			}
		},
		func(i *int64, c randfill.Continue) {
			if c.Intn(3) > 0 {
				*i = int64(c.Uint64())
			}
		},
		func(b *bool, c randfill.Continue) { *b = c.Intn(2) == 0 },
		func(m *map[string]string, c randfill.Continue) {
			if c.Intn(4) == 0 {
				return
			}
			*m = map[string]string{}
			for _, k := range []string{"app", "team", "disktype", "a.b", ""}[:c.Intn(5)] {
				(*m)[k] = c.String(6)
			}
		},
	)
}

// typePaths lists JSON paths into Go type t as the converter names its fields, up to
// depth (a list and a map each get an element: "0" and "app", "team", "a").
func typePaths(t reflect.Type, prefix string, depth int, out map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if depth == 0 || len(out) > 20000 {
		return
	}
	add := func(p string, sub reflect.Type) {
		out[p] = true
		out[p+".x"] = true // a field that is not there, or through a scalar
		typePaths(sub, p, depth-1, out)
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == reflect.TypeFor[metav1.Time]() || t == reflect.TypeFor[resource.Quantity]() || t == reflect.TypeFor[intstr.IntOrString]() {
			return
		}
		for i := range t.NumField() {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" && sf.Anonymous {
				typePaths(sf.Type, prefix, depth, out) // inlined
				continue
			}
			if name == "" {
				name = sf.Name
			}
			add(strings.TrimPrefix(prefix+"."+name, "."), sf.Type)
		}
	case reflect.Slice:
		// Through a list every path is "" (and the decoding side formats the whole list
		// into an error for each): one step in is enough.
		if t.Elem().Kind() != reflect.Uint8 {
			out[prefix+".0"] = true
		}
	case reflect.Map:
		for _, k := range []string{"app", "team", "a", "cpu", "memory", "token", ""} {
			add(prefix+"."+k, t.Elem())
		}
	}
}

// valuePaths lists every path in an unstructured object, maps and lists included.
func valuePaths(v any, prefix string, out map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			out[p] = true
			out[p+".x"] = true
			valuePaths(x, p, out)
		}
	case []any:
		out[prefix+".0"] = true // through a list: see typePaths
	}
}

func sortedPaths(sets ...map[string]bool) []string {
	all := map[string]bool{"": true, ".": true, "kind": true, "apiVersion": true, "kind.x": true, "metadata..name": true, "nothing.here": true}
	for _, s := range sets {
		for p := range s {
			all[p] = true
		}
	}
	out := make([]string, 0, len(all))
	for p := range all {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// checkPaths compares Value, with one reader kept across objects (its buffers and plans
// reused), against ValueDecoded on a fresh reader, for every path.
func checkPaths(t *testing.T, name string, shared *FieldReader, o *Object, paths []string) (fast, total int) {
	t.Helper()
	want := &FieldReader{}
	before := shared.fallbacks
	for _, p := range paths {
		got := strings.Clone(shared.Value(o, p))
		if exp := want.ValueDecoded(o, p); got != exp {
			t.Errorf("%s: %q: Value %q, decoding %q", name, p, got, exp)
		}
	}
	// And once more, now that the reader holds this object and its plans.
	for _, p := range paths {
		if got, exp := shared.Value(o, p), want.ValueDecoded(o, p); got != exp {
			t.Fatalf("%s: %q read again: Value %q, decoding %q", name, p, got, exp)
		}
	}
	return 2*len(paths) - (shared.fallbacks - before), 2 * len(paths)
}

// Value reads, for every kind fleetcache caches by default filled at random (protobuf,
// plain and compressed) and the same objects kept as JSON, every path into the type and
// into the object, exactly what decoding the object reads.
func TestFieldReaderMatchesDecoding(t *testing.T) {
	objects := 16
	if testing.Short() {
		objects = 6
	}
	fast, total := 0, 0
	for _, k := range fieldKinds {
		gvks, _, err := scheme.Scheme.ObjectKinds(k.new())
		if err != nil {
			t.Fatal(err)
		}
		gvk := gvks[0]
		c, err := NewCompactor(gvk, k.resource)
		if err != nil {
			t.Fatal(err)
		}
		tp := map[string]bool{}
		typePaths(reflect.TypeOf(k.new()), "", 6, tp)
		for _, p := range k.paths {
			tp[p] = true
		}
		shared := &FieldReader{}
		for i := range objects {
			obj := k.new()
			fieldFiller(int64(i)).Fill(obj)
			// As Decode returns it: the kind set, what the cache drops dropped.
			obj.GetObjectKind().SetGroupVersionKind(gvk)
			obj.(metav1.Object).SetManagedFields(nil)
			u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj.DeepCopyObject())
			if err != nil {
				continue // the converter refuses the object: nothing to compare with
			}
			o, err := c.Compact(obj)
			if err != nil {
				t.Fatal(err)
			}
			vp := map[string]bool{}
			valuePaths(u, "", vp)
			paths := sortedPaths(tp, vp)
			f, n := checkPaths(t, fmt.Sprintf("%s #%d", k.resource, i), shared, o, paths)
			fast, total = fast+f, total+n
			// The same object kept as JSON, as a custom resource is.
			j, err := c.Compact(&unstructured.Unstructured{Object: u})
			if err != nil {
				t.Fatal(err)
			}
			if j.codec.newTyped != nil {
				t.Fatal("the unstructured object was kept as protobuf")
			}
			f, n = checkPaths(t, fmt.Sprintf("%s #%d as JSON", k.resource, i), shared, j, paths)
			fast, total = fast+f, total+n
		}
	}
	// Most paths are read from the bytes; the others (MicroTimes, ...) are decoded. Were
	// the reader to decode everything, or nothing, this fails.
	if fast < total*9/10 || fast == total {
		t.Errorf("%d of %d reads took the fast path", fast, total)
	}
	t.Logf("%d of %d reads from the stored bytes", fast, total)
}

// Compressed bodies (a resource past its dictionary's training) read as plain ones do,
// and realistic objects take the fast path for every field selector.
func TestFieldReaderOnCompressedBodies(t *testing.T) {
	c := podCompactor(t)
	var last *Object
	for i := range 300 {
		o, err := c.Compact(fleetPod(i, 20))
		if err != nil {
			t.Fatal(err)
		}
		last = o
	}
	if _, compressed := last.StoredSize(); !compressed {
		t.Fatal("pods are not stored compressed")
	}
	p := realisticPod(7)
	p.Spec.HostNetwork = false
	p.Spec.Priority = ptr.To(int32(0))
	p.Spec.NodeSelector = map[string]string{"disktype": "ssd", "kubernetes.io/os": "linux"}
	p.Spec.Overhead = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("0.25")}
	o, err := c.Compact(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, compressed := o.StoredSize(); !compressed {
		t.Fatal("the pod is not stored compressed")
	}
	want := map[string]string{
		"spec.schedulerName": "default-scheduler", "spec.hostNetwork": "", "spec.priority": "0", "status.phase": "Running",
		"spec.nodeSelector.disktype": "ssd", "spec.overhead.cpu": "250m", "status.startTime": "2026-11-01T12:00:00Z",
		"spec.restartPolicy": "Always", "kind": "Pod", "apiVersion": "v1", "metadata.labels.team": "payments",
		"spec.containers": "", "status.podIPs": "", "spec.dnsPolicy": "ClusterFirst", "spec.securityContext": "",
	}
	r := &FieldReader{}
	for _, k := range fieldKinds[0].paths {
		if _, ok := want[k]; !ok {
			want[k] = r.ValueDecoded(o, k)
		}
	}
	r = &FieldReader{}
	for path, v := range want {
		if got := r.Value(o, path); got != v {
			t.Errorf("%s: %q, want %q", path, got, v)
		}
	}
	if r.fallbacks != 0 {
		t.Errorf("%d of the pod's field selectors were read by decoding", r.fallbacks)
	}
}

// A custom resource's JSON: numbers as the unstructured form keeps them (integers as
// int64, others as float64), escapes, nulls and unicode.
func TestFieldReaderJSON(t *testing.T) {
	c, err := NewCompactor(schemaWidget, "widgets.example.com")
	if err != nil {
		t.Fatal(err)
	}
	w := realisticWidget(1)
	w.Object["spec"] = map[string]any{"color": "te\"al\u00e9\u2028<", "size": int64(-3), "ratio": 0.25, "big": 1e21, "small": 1e-7,
		"whole": float64(4), "none": nil, "on": true, "off": false, "list": []any{"a"}, "nested": map[string]any{"deep": map[string]any{"x": "y"}}}
	o, err := c.Compact(w)
	if err != nil {
		t.Fatal(err)
	}
	r, ref := &FieldReader{}, &FieldReader{}
	for _, p := range []string{"spec.color", "spec.size", "spec.ratio", "spec.big", "spec.small", "spec.whole", "spec.none", "spec.none.x",
		"spec.on", "spec.off", "spec.list", "spec.list.0", "spec.nested", "spec.nested.deep.x", "spec.nested.deep.x.y", "kind",
		"apiVersion", "metadata.generation", "metadata.labels.app", "status.observedGeneration", "status.conditions", "spec.missing"} {
		if got, want := r.Value(o, p), ref.ValueDecoded(o, p); got != want {
			t.Errorf("%s: %q, decoding %q", p, got, want)
		}
	}
	if r.fallbacks != 0 {
		t.Errorf("%d reads decoded the widget", r.fallbacks)
	}
	if got := r.Value(o, "spec.color"); got != "te\"al\u00e9\u2028<" {
		t.Errorf("spec.color: %q", got)
	}
}

var schemaWidget = realisticWidget(0).GroupVersionKind()

// BenchmarkFieldReader reads one field no index answers from a realistic pod kept
// compressed: from the stored bytes, and by decoding it (the path every field selector
// took before).
func BenchmarkFieldReader(b *testing.B) {
	c := podCompactor(b)
	var o *Object
	for i := range 300 {
		o, _ = c.Compact(fleetPod(i, 20))
	}
	objs := make([]*Object, 64)
	for i := range objs {
		objs[i], _ = c.Compact(fleetPod(1000+i, 20))
	}
	_ = o
	for _, path := range []string{"spec.schedulerName", "status.podIP", "spec.priority"} {
		b.Run("stored/"+path, func(b *testing.B) {
			r := &FieldReader{}
			b.ReportAllocs()
			for i := range b.N {
				if r.Value(objs[i%len(objs)], path) == "x" {
					b.Fatal()
				}
			}
		})
		b.Run("decoded/"+path, func(b *testing.B) {
			r := &FieldReader{}
			b.ReportAllocs()
			for i := range b.N {
				if r.ValueDecoded(objs[i%len(objs)], path) == "x" {
					b.Fatal()
				}
			}
		})
	}
}
