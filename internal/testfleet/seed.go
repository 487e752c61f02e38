package testfleet

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// SeedLabel marks every object Seed creates; its value is the cluster name.
const SeedLabel = "fleetcache.io/seed"

// The custom resource Seed installs in every other cluster (index 0, 2, ...).
var (
	WidgetGVR     = schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}
	WidgetCRDName = "widgets.example.com"
	crdGVR        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// SeedOptions sizes the inventory. The zero value is the small default plan.
type SeedOptions struct {
	// Pods per cluster. 0 keeps the default plan (about 10-30 pods per cluster); any other
	// value spreads exactly that many pods over the plan's Deployments.
	Pods int
	// Concurrency of writes per cluster. Default 32.
	Concurrency int
}

// Plan is the deterministic inventory of one cluster: the same cluster name, index and
// options always give the same objects, and different indexes give different inventories.
type Plan struct {
	Cluster    string
	Namespaces []string
	Nodes      []string
	Apps       []App
	Pods       []PodPlan
	Secrets    []NamespacedName
	Widgets    []NamespacedName // empty when the cluster has no Widget CRD
}

// App is one Deployment with its ReplicaSet, Service and ConfigMap.
type App struct {
	Namespace, Name string
	ReplicaSet      string
	Images          []string
	Replicas        int
}

// PodPlan is one Pod of an App.
type PodPlan struct {
	Namespace, Name string
	App             int // index into Plan.Apps
	Node            string
	Phase           corev1.PodPhase
}

// NamespacedName names a namespaced object.
type NamespacedName struct{ Namespace, Name string }

var teams = []string{"payments", "search", "checkout", "identity", "ml-platform", "observability"}
var appNames = []string{"api", "worker", "web"}

// HasWidgets reports whether the cluster at index gets the Widget CRD.
func HasWidgets(index int) bool { return index%2 == 0 }

// PlanFor computes the inventory of the cluster at index.
func PlanFor(cluster string, index int, opts SeedOptions) *Plan {
	p := &Plan{Cluster: cluster}
	for j := range 3 + index {
		name := "team-" + strconv.Itoa(j)
		if j < len(teams) {
			name = teams[j]
		}
		p.Namespaces = append(p.Namespaces, name)
	}
	for n := range 2 + index {
		p.Nodes = append(p.Nodes, fmt.Sprintf("%s-node-%d", cluster, n))
	}
	for j, ns := range p.Namespaces {
		for k := range 1 + (index+j)%3 {
			app := App{
				Namespace: ns,
				Name:      appNames[k],
				Images:    []string{fmt.Sprintf("registry.example.com/%s/%s:1.%d.0", ns, appNames[k], (index+k)%4)},
				Replicas:  1 + (index+j+k)%3,
			}
			if k == 0 {
				app.Images = append(app.Images, fmt.Sprintf("docker.io/envoyproxy/envoy:v1.3%d.0", index%4))
			}
			app.ReplicaSet = app.Name + "-" + suffix(cluster+"/"+ns+"/"+app.Name, 10)
			p.Apps = append(p.Apps, app)
		}
		p.Secrets = append(p.Secrets, NamespacedName{ns, ns + "-db-credentials"})
		if HasWidgets(index) {
			p.Widgets = append(p.Widgets, NamespacedName{ns, "widget-a"}, NamespacedName{ns, "widget-b"})
		}
	}
	if opts.Pods > 0 {
		for a := range p.Apps {
			p.Apps[a].Replicas = opts.Pods / len(p.Apps)
			if a < opts.Pods%len(p.Apps) {
				p.Apps[a].Replicas++
			}
		}
	}
	// One pod in ten fails, one succeeds, two wait; the rest run.
	phases := []corev1.PodPhase{"Running", "Running", "Running", "Running", "Running", "Running", "Pending", "Pending", "Succeeded", "Failed"}
	for a, app := range p.Apps {
		for r := range app.Replicas {
			n := len(p.Pods)
			p.Pods = append(p.Pods, PodPlan{
				Namespace: app.Namespace,
				Name:      app.ReplicaSet + "-" + suffix(app.ReplicaSet+strconv.Itoa(r), 5),
				App:       a,
				Node:      p.Nodes[n%len(p.Nodes)],
				Phase:     phases[(n+index)%len(phases)],
			})
		}
	}
	return p
}

// Count returns how many objects of a resource (plural name, e.g. "pods", "widgets") the
// plan creates.
func (p *Plan) Count(resource string) int {
	switch resource {
	case "namespaces":
		return len(p.Namespaces)
	case "nodes":
		return len(p.Nodes)
	case "deployments", "replicasets", "services", "configmaps":
		return len(p.Apps)
	case "pods":
		return len(p.Pods)
	case "secrets":
		return len(p.Secrets)
	case "widgets":
		return len(p.Widgets)
	}
	return 0
}

// PodsInPhase counts the plan's pods in phase.
func (p *Plan) PodsInPhase(phase corev1.PodPhase) int {
	n := 0
	for _, pod := range p.Pods {
		if pod.Phase == phase {
			n++
		}
	}
	return n
}

// suffix is a deterministic name suffix in the alphabet Kubernetes uses for generated names.
func suffix(seed string, n int) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	h := fnv.New64a()
	h.Write([]byte(seed))
	v := h.Sum64()
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[v%uint64(len(alphabet))]
		v = v/uint64(len(alphabet)) + uint64(i)*2654435761
	}
	return string(b)
}

// Seed creates the cluster's plan through its admin user. Existing objects are kept, so
// seeding twice is harmless. Pod and workload phases are written through the status
// subresource, as a kubelet and controllers would.
func Seed(ctx context.Context, c *Cluster, opts SeedOptions) (*Plan, error) {
	if opts.Concurrency == 0 {
		opts.Concurrency = 32
	}
	p := PlanFor(c.Name, c.Index, opts)
	cfg := c.AdminConfig()
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limit: the apiserver's own fairness applies
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &seeder{plan: p, cs: cs, dyn: dyn, index: c.Index, labels: map[string]string{SeedLabel: c.Name}}

	if len(p.Widgets) > 0 {
		if err := s.installCRD(ctx); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", c.Name, err)
		}
	}
	steps := []struct {
		what string
		n    int
		fn   func(context.Context, int) error
	}{
		{"namespaces", len(p.Namespaces), s.namespace},
		{"nodes", len(p.Nodes), s.node},
		{"apps", len(p.Apps), s.app},
		{"pods", len(p.Pods), s.pod},
		{"secrets", len(p.Secrets), s.secret},
		{"widgets", len(p.Widgets), s.widget},
	}
	for _, step := range steps {
		if err := parallel(ctx, opts.Concurrency, step.n, step.fn); err != nil {
			return nil, fmt.Errorf("cluster %s: seed %s: %w", c.Name, step.what, err)
		}
	}
	return p, nil
}

type seeder struct {
	plan   *Plan
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	index  int
	labels map[string]string

	mu     sync.Mutex
	rsRefs map[string]metav1.OwnerReference // namespace/replicaset -> owner reference
}

func (s *seeder) meta(ns, name string, extra map[string]string) metav1.ObjectMeta {
	l := map[string]string{}
	for k, v := range s.labels {
		l[k] = v
	}
	for k, v := range extra {
		l[k] = v
	}
	return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l}
}

func (s *seeder) namespace(ctx context.Context, i int) error {
	name := s.plan.Namespaces[i]
	ns := &corev1.Namespace{ObjectMeta: s.meta("", name, map[string]string{"team": name})}
	if _, err := s.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return err
	}
	// No controller-manager runs, so nobody else makes the service account pods need.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}}
	_, err := s.cs.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{})
	return ignoreExists(err)
}

func (s *seeder) node(ctx context.Context, i int) error {
	name := s.plan.Nodes[i]
	node := &corev1.Node{
		ObjectMeta: s.meta("", name, map[string]string{
			"kubernetes.io/hostname":           name,
			"topology.kubernetes.io/zone":      fmt.Sprintf("zone-%c", 'a'+rune(i%3)),
			"node.kubernetes.io/instance-type": []string{"m6i.xlarge", "m6i.2xlarge", "c6i.4xlarge"}[i%3],
		}),
		Spec: corev1.NodeSpec{PodCIDR: fmt.Sprintf("10.%d.%d.0/24", 100+s.index, i)},
	}
	_, err := s.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	return ignoreExists(err)
}

// app creates a Deployment, its ReplicaSet (owned by it), a Service and a ConfigMap.
func (s *seeder) app(ctx context.Context, i int) error {
	a := s.plan.Apps[i]
	sel := map[string]string{"app": a.Name}
	podLabels := map[string]string{"app": a.Name, "pod-template-hash": a.ReplicaSet[len(a.Name)+1:]}
	template := corev1.PodTemplateSpec{ObjectMeta: s.meta("", "", podLabels), Spec: podSpec(a, "")}

	dep := &appsv1.Deployment{
		ObjectMeta: s.meta(a.Namespace, a.Name, sel),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(a.Replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: s.meta("", "", sel), Spec: podSpec(a, "")},
		},
	}
	created, err := s.cs.AppsV1().Deployments(a.Namespace).Create(ctx, dep, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = s.cs.AppsV1().Deployments(a.Namespace).Get(ctx, a.Name, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	ready := int32(0)
	for _, pod := range s.plan.Pods {
		if pod.App == i && pod.Phase == corev1.PodRunning {
			ready++
		}
	}
	created.Status = appsv1.DeploymentStatus{
		ObservedGeneration: created.Generation, Replicas: int32(a.Replicas), UpdatedReplicas: int32(a.Replicas),
		ReadyReplicas: ready, AvailableReplicas: ready, UnavailableReplicas: int32(a.Replicas) - ready,
	}
	if _, err := s.cs.AppsV1().Deployments(a.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return err
	}

	rs := &appsv1.ReplicaSet{
		ObjectMeta: s.meta(a.Namespace, a.ReplicaSet, podLabels),
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To(int32(a.Replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: podLabels},
			Template: template,
		},
	}
	rs.OwnerReferences = []metav1.OwnerReference{ownerRef("apps/v1", "Deployment", created.ObjectMeta)}
	createdRS, err := s.cs.AppsV1().ReplicaSets(a.Namespace).Create(ctx, rs, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		createdRS, err = s.cs.AppsV1().ReplicaSets(a.Namespace).Get(ctx, a.ReplicaSet, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	createdRS.Status = appsv1.ReplicaSetStatus{
		Replicas: int32(a.Replicas), FullyLabeledReplicas: int32(a.Replicas), ReadyReplicas: ready,
		AvailableReplicas: ready, ObservedGeneration: createdRS.Generation,
	}
	if _, err := s.cs.AppsV1().ReplicaSets(a.Namespace).UpdateStatus(ctx, createdRS, metav1.UpdateOptions{}); err != nil {
		return err
	}
	s.mu.Lock()
	if s.rsRefs == nil {
		s.rsRefs = map[string]metav1.OwnerReference{}
	}
	s.rsRefs[a.Namespace+"/"+a.ReplicaSet] = ownerRef("apps/v1", "ReplicaSet", createdRS.ObjectMeta)
	s.mu.Unlock()

	svc := &corev1.Service{
		ObjectMeta: s.meta(a.Namespace, a.Name, sel),
		Spec: corev1.ServiceSpec{
			Selector: sel,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	if _, err := s.cs.CoreV1().Services(a.Namespace).Create(ctx, svc, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: s.meta(a.Namespace, a.Name+"-config", sel),
		Data: map[string]string{
			"LOG_LEVEL":   []string{"info", "debug", "warn"}[i%3],
			"config.yaml": fmt.Sprintf("service: %s\nnamespace: %s\nreplicas: %d\nfeatures:\n  tracing: true\n", a.Name, a.Namespace, a.Replicas),
		},
	}
	_, err = s.cs.CoreV1().ConfigMaps(a.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	return ignoreExists(err)
}

func ownerRef(apiVersion, kind string, m metav1.ObjectMeta) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: m.Name, UID: m.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
}

func podSpec(a App, node string) corev1.PodSpec {
	spec := corev1.PodSpec{NodeName: node}
	for c, image := range a.Images {
		name, port := a.Name, "http"
		if c > 0 {
			name, port = "envoy", "envoy-admin"
		}
		spec.Containers = append(spec.Containers, corev1.Container{
			Name:  name,
			Image: image,
			Ports: []corev1.ContainerPort{{Name: port, ContainerPort: int32(8080 + c), Protocol: corev1.ProtocolTCP}},
			Env: []corev1.EnvVar{
				{Name: "APP", Value: a.Name},
				{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
			},
		})
	}
	return spec
}

func (s *seeder) pod(ctx context.Context, i int) error {
	pp := s.plan.Pods[i]
	a := s.plan.Apps[pp.App]
	s.mu.Lock()
	ref := s.rsRefs[a.Namespace+"/"+a.ReplicaSet]
	s.mu.Unlock()
	pod := &corev1.Pod{
		ObjectMeta: s.meta(pp.Namespace, pp.Name, map[string]string{"app": a.Name, "pod-template-hash": a.ReplicaSet[len(a.Name)+1:]}),
		Spec:       podSpec(a, pp.Node),
	}
	pod.OwnerReferences = []metav1.OwnerReference{ref}
	created, err := s.cs.CoreV1().Pods(pp.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = s.cs.CoreV1().Pods(pp.Namespace).Get(ctx, pp.Name, metav1.GetOptions{})
	}
	if err != nil || pp.Phase == corev1.PodPending {
		return err
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	created.Status.ContainerStatuses, created.Status.Conditions = nil, nil // seeding again replaces them
	created.Status.Phase = pp.Phase
	created.Status.StartTime = &now
	created.Status.HostIP = fmt.Sprintf("10.%d.0.%d", 200+s.index, 10+i%200)
	created.Status.HostIPs = []corev1.HostIP{{IP: created.Status.HostIP}}
	created.Status.PodIP = fmt.Sprintf("10.%d.%d.%d", 100+s.index, (i/250)%250, 2+i%250)
	created.Status.PodIPs = []corev1.PodIP{{IP: created.Status.PodIP}}
	for _, c := range created.Spec.Containers {
		st := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image + "@sha256:" + suffix(c.Image, 12)}
		switch pp.Phase {
		case corev1.PodRunning:
			st.Ready, st.Started = true, ptr.To(true)
			st.State.Running = &corev1.ContainerStateRunning{StartedAt: now}
		case corev1.PodSucceeded:
			st.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}
		case corev1.PodFailed:
			st.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", StartedAt: now, FinishedAt: now}
			st.RestartCount = int32(1 + i%5)
		}
		created.Status.ContainerStatuses = append(created.Status.ContainerStatuses, st)
	}
	readyStatus := corev1.ConditionFalse
	if pp.Phase == corev1.PodRunning {
		readyStatus = corev1.ConditionTrue
	}
	created.Status.Conditions = append(created.Status.Conditions,
		corev1.PodCondition{Type: corev1.PodReady, Status: readyStatus, LastTransitionTime: now},
		corev1.PodCondition{Type: corev1.ContainersReady, Status: readyStatus, LastTransitionTime: now},
	)
	_, err = s.cs.CoreV1().Pods(pp.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func (s *seeder) secret(ctx context.Context, i int) error {
	n := s.plan.Secrets[i]
	secret := &corev1.Secret{
		ObjectMeta: s.meta(n.Namespace, n.Name, nil),
		Type:       corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			"username": []byte(n.Namespace + "-svc"),
			"password": []byte(suffix(s.plan.Cluster+n.Namespace, 24)),
		},
	}
	_, err := s.cs.CoreV1().Secrets(n.Namespace).Create(ctx, secret, metav1.CreateOptions{})
	return ignoreExists(err)
}

func (s *seeder) widget(ctx context.Context, i int) error {
	n := s.plan.Widgets[i]
	w := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1",
		"kind":       "Widget",
		"metadata":   map[string]any{"namespace": n.Namespace, "name": n.Name, "labels": map[string]any{SeedLabel: s.plan.Cluster}},
		"spec":       map[string]any{"color": []string{"red", "green", "blue"}[i%3], "size": int64(1 + i%5)},
	}}
	// A freshly established CRD can take a moment to be served: retry NotFound briefly.
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := s.dyn.Resource(WidgetGVR).Namespace(n.Namespace).Create(ctx, w, metav1.CreateOptions{})
		switch {
		case err == nil || apierrors.IsAlreadyExists(err):
			return true, nil
		case apierrors.IsNotFound(err):
			return false, nil
		}
		return false, err
	})
}

// WidgetCRD returns the Widget CustomResourceDefinition Seed installs.
func WidgetCRD() *unstructured.Unstructured {
	str := map[string]any{"type": "string"}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": WidgetCRDName},
		"spec": map[string]any{
			"group": "example.com",
			"scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": []any{"wg"}, "categories": []any{"all"}},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"spec": map[string]any{"type": "object", "properties": map[string]any{"color": str, "size": map[string]any{"type": "integer"}}},
					},
				}},
				"additionalPrinterColumns": []any{
					map[string]any{"name": "Color", "type": "string", "jsonPath": ".spec.color"},
					map[string]any{"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
					map[string]any{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
				},
			}},
		},
	}}
}

// installCRD creates the Widget CRD and waits until it is Established.
func (s *seeder) installCRD(ctx context.Context) error {
	_, err := s.dyn.Resource(crdGVR).Create(ctx, WidgetCRD(), metav1.CreateOptions{})
	if ignoreExists(err) != nil {
		return fmt.Errorf("create CRD %s: %w", WidgetCRDName, err)
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		crd, err := s.dyn.Resource(crdGVR).Get(ctx, WidgetCRDName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// parallel runs fn(ctx, i) for i in [0, n) on at most workers goroutines and returns every
// error (at most the first 10, then a count).
func parallel(ctx context.Context, workers, n int, fn func(context.Context, int) error) error {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   *multierror.Error
		failed int
		next   = make(chan int)
	)
	for range min(workers, n) {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					failed++
					if failed <= 10 {
						errs = multierror.Append(errs, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			close(next)
			wg.Wait()
			return ctx.Err()
		}
	}
	close(next)
	wg.Wait()
	if failed > 10 {
		errs = multierror.Append(errs, fmt.Errorf("and %d more errors", failed-10))
	}
	return errs.ErrorOrNil()
}
