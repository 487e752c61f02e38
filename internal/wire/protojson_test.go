package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/randfill"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/fixtures"
)

// cachedKinds are the kinds fleetcache caches by default.
var cachedKinds = map[string]func() runtime.Object{
	"pods":                   func() runtime.Object { return &corev1.Pod{} },
	"services":               func() runtime.Object { return &corev1.Service{} },
	"nodes":                  func() runtime.Object { return &corev1.Node{} },
	"namespaces":             func() runtime.Object { return &corev1.Namespace{} },
	"configmaps":             func() runtime.Object { return &corev1.ConfigMap{} },
	"secrets":                func() runtime.Object { return &corev1.Secret{} },
	"persistentvolumeclaims": func() runtime.Object { return &corev1.PersistentVolumeClaim{} },
	"deployments.apps":       func() runtime.Object { return &appsv1.Deployment{} },
	"replicasets.apps":       func() runtime.Object { return &appsv1.ReplicaSet{} },
	"statefulsets.apps":      func() runtime.Object { return &appsv1.StatefulSet{} },
	"daemonsets.apps":        func() runtime.Object { return &appsv1.DaemonSet{} },
	"jobs.batch":             func() runtime.Object { return &batchv1.Job{} },
	"cronjobs.batch":         func() runtime.Object { return &batchv1.CronJob{} },
	"ingresses.networking.k8s.io": func() runtime.Object {
		return &networkingv1.Ingress{}
	},
}

var quantities = []string{"0", "1", "250m", "1.5", "128Mi", "1Gi", "2e3", "100k", "0.5", "1001m", "12345678901234567890"}

func filler(seed int64) *randfill.Filler {
	return randfill.NewWithSeed(seed).NilChance(0.3).NumElements(0, 3).Funcs(
		func(q *resource.Quantity, c randfill.Continue) {
			*q = resource.MustParse(quantities[c.Intn(len(quantities))])
		},
		func(t *metav1.Time, c randfill.Continue) {
			if c.Intn(4) == 0 {
				*t = metav1.Time{}
				return
			}
			*t = metav1.Unix(c.Int63n(4e9), 0)
		},
		func(t *metav1.MicroTime, c randfill.Continue) {
			*t = metav1.NewMicroTime(time.Unix(c.Int63n(4e9), c.Int63n(1e9)))
		},
		func(v *intstr.IntOrString, c randfill.Continue) {
			if c.Intn(2) == 0 {
				*v = intstr.FromInt32(c.Int31())
			} else {
				*v = intstr.FromString(c.String(8))
			}
		},
		func(r *runtime.RawExtension, c randfill.Continue) {
			*r = runtime.RawExtension{Raw: []byte(fmt.Sprintf(`{"n":%d}`, c.Intn(100)))}
		},
		func(f *metav1.FieldsV1, c randfill.Continue) { *f = metav1.FieldsV1{Raw: []byte(`{"f:a":{}}`)} },
		func(s *string, c randfill.Continue) {
			const chars = "ab<>&\"\\\n\x01é"
			b := make([]byte, c.Intn(12))
			for i := range b {
				b[i] = chars[c.Intn(len(chars))]
			}
			*s = string(b)
		},
	)
}

// The transcoder writes, for every cached kind filled at random, exactly what
// encoding/json writes for the decoded object, tagged with its cluster or not.
func TestTranscodeIsWhatEncodingJSONWrites(t *testing.T) {
	transcoded, total := 0, 0
	for resource, newObj := range cachedKinds {
		obj := newObj()
		gvks, _, err := scheme.Scheme.ObjectKinds(obj)
		if err != nil {
			t.Fatal(err)
		}
		c, err := clusters.NewCompactor(gvks[0], resource)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 300 {
			obj := newObj()
			filler(int64(i)).Fill(obj)
			o, err := c.Compact(obj)
			if err != nil {
				t.Fatal(err)
			}
			for _, cluster := range []string{"", "alpha"} {
				it := aggregator.Item{Cluster: cluster, Object: o}
				want, wantErr := decodeAndEncode(it, cluster)
				raw, typ, gvk, _, _ := o.Protobuf(nil)
				got, err := appendProtoJSON(nil, raw, typ, gvk, cluster)
				total++
				if err != nil {
					continue // the slow path answers for it
				}
				transcoded++
				if wantErr != nil {
					t.Errorf("%s #%d: encoding/json fails (%v), the transcoder wrote %s", resource, i, wantErr, got)
					continue
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s #%d (cluster %q):\n got  %s\n want %s", resource, i, cluster, got, want)
				}
			}
		}
	}
	// Random objects hit the unsupported cases too (RawExtensions...); most must transcode.
	if transcoded < total*8/10 {
		t.Errorf("only %d of %d objects transcoded", transcoded, total)
	}
	t.Logf("%d of %d transcoded", transcoded, total)
}

func decodeAndEncode(it aggregator.Item, cluster string) ([]byte, error) {
	if cluster == "" {
		obj, err := it.Object.Decode()
		if err != nil {
			return nil, err
		}
		return json.Marshal(obj)
	}
	return DecodeAndAppendObject(nil, it)
}

func TestTranscodeRealisticPod(t *testing.T) {
	o := compact(t, fixtures.RealisticPod(3))
	it := aggregator.Item{Cluster: "alpha", Object: o}
	want, err := DecodeAndAppendObject(nil, it)
	if err != nil {
		t.Fatal(err)
	}
	got, err := AppendObject(nil, it)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%v\n got  %s\n want %s", err, got, want)
	}
	raw, typ, gvk, _, _ := o.Protobuf(nil)
	if _, err := appendProtoJSON(nil, raw, typ, gvk, "alpha"); err != nil {
		t.Errorf("a realistic pod takes the slow path: %v", err)
	}
}

func BenchmarkObjectJSON(b *testing.B) {
	c, _ := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	o, _ := c.Compact(fixtures.RealisticPod(3))
	it := aggregator.Item{Cluster: "alpha", Object: o}
	var buf []byte
	b.Run("transcode", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			buf, _ = AppendObject(buf[:0], it)
		}
		b.ReportMetric(float64(len(buf)), "bytes")
	})
	b.Run("decode-and-encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			buf, _ = DecodeAndAppendObject(buf[:0], it)
		}
	})
	// The same pod kept compressed, as every pod is once its resource has trained its
	// dictionary (clusters/body.go): the transcoder decompresses it first.
	for i := range 300 {
		o, _ = c.Compact(fixtures.RealisticPod(1000 + i))
	}
	if _, compressed := o.StoredSize(); !compressed {
		b.Fatal("the pod is not stored compressed")
	}
	it = aggregator.Item{Cluster: "alpha", Object: o}
	b.Run("transcode-compressed", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			buf, _ = AppendObject(buf[:0], it)
		}
		b.ReportMetric(float64(len(buf)), "bytes")
	})
}
