package wire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/fixtures"
)

var trickyStrings = []string{
	"", "plain", `quote " and \ backslash`, "<html> & friends", "tab\tnew\nline\rcr\bbs\fff",
	"\x00\x01\x1f\x7f", "ünïcödé ✓ 日本", "\u2028 and \u2029", "bad \xff utf8 \xc3", "emoji 🚀",
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range trickyStrings {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range trickyStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	})
}

func compact(t *testing.T, obj *corev1.Pod) *clusters.Object {
	t.Helper()
	c, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.Compact(obj)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

var podInfo = aggregator.ResourceInfo{Name: "pods", Kind: "Pod", APIVersion: "v1", Namespaced: true}

// The Table written by hand is byte for byte what encoding/json writes for the same
// metav1.Table, and holds the pod printer's cells.
func TestTableIsWhatEncodingJSONWrites(t *testing.T) {
	now := time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)
	p := fixtures.RealisticPod(7)
	p.Labels["odd"] = "<&>"
	items := []aggregator.Item{{Cluster: "alpha", Resource: "pods", Object: compact(t, p)}, {Cluster: "bra\"vo", Resource: "pods", Object: compact(t, fixtures.RealisticPod(8))}}
	for _, include := range []IncludeObject{IncludeMetadata, IncludeNone, IncludeFull} {
		tb := NewTable(podInfo, include)
		buf := tb.Start(nil, "rv-1", "next")
		for i, it := range items {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = tb.AppendRow(buf, it, now); err != nil {
				t.Fatal(err)
			}
		}
		buf = tb.End(buf)
		var decoded metav1.Table
		if err := json.Unmarshal(buf, &decoded); err != nil {
			t.Fatalf("%s: %v\n%s", include, err, buf)
		}
		again, _ := json.Marshal(&decoded)
		if !bytes.Equal(again, buf) {
			t.Errorf("%s: not what encoding/json writes:\n got  %s\n want %s", include, buf, again)
		}
		if decoded.ResourceVersion != "rv-1" || decoded.Continue != "next" || len(decoded.Rows) != 2 {
			t.Fatalf("%s: metadata %+v, %d rows", include, decoded.ListMeta, len(decoded.Rows))
		}
		var names []string
		for _, c := range decoded.ColumnDefinitions {
			names = append(names, c.Name)
		}
		if want := "[Cluster Name Ready Status Restarts Age IP Node Nominated Node Readiness Gates]"; fmt.Sprint(names) != want {
			t.Errorf("columns %v, want %s", names, want)
		}
		row := decoded.Rows[0]
		if got, want := fmt.Sprint(row.Cells), fmt.Sprintf("[alpha %s 2/2 Running 0 24h <none> %s <none> <none>]", p.Name, p.Spec.NodeName); got != want {
			t.Errorf("cells %s, want %s", got, want)
		}
		switch include {
		case IncludeNone:
			if len(row.Object.Raw) != 0 {
				t.Errorf("includeObject=None sent %s", row.Object.Raw)
			}
		case IncludeMetadata, IncludeFull:
			var m metav1.PartialObjectMetadata
			if err := json.Unmarshal(row.Object.Raw, &m); err != nil {
				t.Fatal(err)
			}
			if m.Name != p.Name || m.Namespace != p.Namespace || m.UID != p.UID || m.ResourceVersion != p.ResourceVersion ||
				m.Annotations[ClusterAnnotation] != "alpha" || m.Labels["odd"] != "<&>" || !m.CreationTimestamp.Equal(&p.CreationTimestamp) {
				t.Errorf("%s: row object %+v", include, m.ObjectMeta)
			}
			// Metadata rows carry what the cache keeps decoded (the README says which);
			// whole objects carry the rest.
			lean := len(m.Annotations) == 1 && len(m.OwnerReferences) == 0 && len(m.ManagedFields) == 0
			if want := include == IncludeMetadata; lean != want {
				t.Errorf("%s: row object has %d annotations, %d owner references, %d managedFields entries", include, len(m.Annotations), len(m.OwnerReferences), len(m.ManagedFields))
			}
		}
	}
}

func TestAppendObjectTagsAPrivateCopy(t *testing.T) {
	o := compact(t, fixtures.RealisticPod(1))
	raw, err := AppendObject(nil, aggregator.Item{Cluster: "alpha", Object: o})
	if err != nil {
		t.Fatal(err)
	}
	var p corev1.Pod
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	if p.Annotations[ClusterAnnotation] != "alpha" || p.Name != o.Name || len(p.Spec.Containers) == 0 {
		t.Errorf("decoded %s/%s annotations %v", p.Namespace, p.Name, p.Annotations)
	}
	again, _ := o.Decode()
	if _, tagged := again.(*corev1.Pod).Annotations[ClusterAnnotation]; tagged {
		t.Error("the cached object was tagged")
	}
}

func TestStreamKeepsOrderAndStops(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 1000} {
		var got []int
		err := Stream(context.Background(), n, func(dst []byte, i int) ([]byte, error) { return fmt.Appendf(dst, "%d", i), nil },
			func(i int, b []byte) bool {
				if string(b) != fmt.Sprint(i) {
					t.Fatalf("item %d is %q", i, b)
				}
				got = append(got, i)
				return true
			})
		if err != nil || len(got) != n {
			t.Fatalf("n=%d: %v, %d items", n, err, len(got))
		}
	}
	written := 0
	if err := Stream(context.Background(), 10_000, func(dst []byte, i int) ([]byte, error) { return append(dst, 'x'), nil },
		func(i int, _ []byte) bool { written++; return i < 99 }); err != nil || written != 100 {
		t.Errorf("stopped after %d writes (%v), want 100", written, err)
	}
	boom := errors.New("boom")
	written = 0
	err := Stream(context.Background(), 1000, func(dst []byte, i int) ([]byte, error) {
		if i == 500 {
			return dst, boom
		}
		return append(dst, 'x'), nil
	}, func(i int, _ []byte) bool { written++; return true })
	if !errors.Is(err, boom) || written != 500 {
		t.Errorf("error: %v after %d writes, want boom after 500", err, written)
	}
}

// A pod as kubectl shows it in its states; the expected cells are what kube-apiserver
// v1.37's table printer gives (e2e TestKubectlTablesMatchTheClusters compares live).
func TestPodCells(t *testing.T) {
	now := time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)
	started := metav1.NewTime(now.Add(-5 * time.Minute))
	base := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", UID: types.UID("u"), CreationTimestamp: metav1.NewTime(now.Add(-2 * time.Hour))},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}, {Name: "b"}}, NodeName: "node-1"},
			Status:     corev1.PodStatus{Phase: corev1.PodPending},
		}
	}
	cases := []struct {
		name string
		pod  func() *corev1.Pod
		want string
	}{
		{"pending", base, "[0/2 Pending 0 120m <none> node-1 <none> <none>]"},
		{"running, one ready", func() *corev1.Pod {
			p := base()
			p.Status.Phase = corev1.PodRunning
			p.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.9"}}
			p.Status.ContainerStatuses = []corev1.ContainerStatus{
				{Name: "a", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
				{Name: "b", RestartCount: 3, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
					LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, FinishedAt: started}}},
			}
			return p
		}, "[1/2 CrashLoopBackOff 3 (5m ago) 120m 10.0.0.9 node-1 <none> <none>]"},
		{"failed", func() *corev1.Pod {
			p := base()
			p.Status.Phase = corev1.PodFailed
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "a", RestartCount: 2, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}
			return p
		}, "[0/2 Error 2 120m <none> node-1 <none> <none>]"},
		{"init", func() *corev1.Pod {
			p := base()
			p.Spec.InitContainers = []corev1.Container{{Name: "i1"}, {Name: "i2"}}
			p.Status.Phase = corev1.PodPending
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{
				{Name: "i1", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}},
				{Name: "i2", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
			}
			return p
		}, "[0/2 Init:1/2 0 120m <none> node-1 <none> <none>]"},
		{"terminating", func() *corev1.Pod {
			p := base()
			p.Status.Phase = corev1.PodRunning
			p.DeletionTimestamp = &started
			return p
		}, "[0/2 Terminating 0 120m <none> node-1 <none> <none>]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb, err := NewTable(podInfo, IncludeNone).Build([]aggregator.Item{{Cluster: "c", Object: compact(t, tc.pod())}}, "", now)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(tb.Rows[0].Cells[2:]); got != tc.want {
				t.Errorf("cells %s, want %s", got, tc.want)
			}
		})
	}
}
