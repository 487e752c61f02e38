package clusters

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// realisticPod is a pod as a Deployment-managed workload looks on a real cluster: about
// 9 KB of JSON, a third of it managedFields.
func realisticPod(i int) *corev1.Pod {
	now := metav1.NewTime(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	name := fmt.Sprintf("checkout-api-7d9f8b6c5d-%05d", i)
	fieldsV1 := func(n int) *metav1.FieldsV1 {
		var b strings.Builder
		b.WriteString(`{"f:metadata":{"f:labels":{".":{},"f:app":{},"f:pod-template-hash":{},"f:team":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"6f1c\"}":{}}},"f:spec":{"f:containers":{`)
		for c := 0; c < n; c++ {
			fmt.Fprintf(&b, `"k:{\"name\":\"c%d\"}":{".":{},"f:env":{".":{},"k:{\"name\":\"LOG_LEVEL\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:ports":{},"f:resources":{".":{},"f:limits":{},"f:requests":{}}},`, c)
		}
		b.WriteString(`"z":{}}}}`)
		return &metav1.FieldsV1{Raw: []byte(b.String())}
	}
	env := []corev1.EnvVar{}
	for e := 0; e < 16; e++ {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("CHECKOUT_SETTING_%02d", e), Value: fmt.Sprintf("value-%d-of-some-configuration", e)})
	}
	container := func(n, image string) corev1.Container {
		return corev1.Container{
			Name: n, Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			Env:   env,
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
			},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "config", MountPath: "/etc/checkout"},
				{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
			},
			ReadinessProbe:         &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 10},
			LivenessProbe:          &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/livez", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 10},
			TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		}
	}
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "checkout", UID: types.UID(fmt.Sprintf("6f1c2b9e-0000-4000-8000-%012d", i)),
			ResourceVersion: fmt.Sprint(100000 + i), GenerateName: "checkout-api-7d9f8b6c5d-", CreationTimestamp: now,
			Labels: map[string]string{"app": "checkout-api", "pod-template-hash": "7d9f8b6c5d", "team": "payments", "tier": "backend",
				"app.kubernetes.io/name": "checkout-api", "app.kubernetes.io/version": "1.42.0", "app.kubernetes.io/part-of": "shop", "env": "production"},
			Annotations: map[string]string{
				"kubectl.kubernetes.io/restartedAt": "2026-10-30T09:12:44Z",
				"prometheus.io/scrape":              "true", "prometheus.io/port": "8080",
				"checksum/config": "9f2c1e0d7b6a5948372615049382716059483726150493827160594837261504",
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "checkout-api-7d9f8b6c5d", UID: "6f1c", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1", FieldsV1: fieldsV1(4)},
				{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1", FieldsV1: fieldsV1(3), Subresource: "status"},
			},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{container("checkout-api", "registry.example.com/shop/checkout-api:1.42.0"), container("envoy", "docker.io/envoyproxy/envoy:v1.31.0")},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "checkout-api-config"}}}},
				{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To(int64(3607))}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				}}}},
			},
			RestartPolicy: corev1.RestartPolicyAlways, DNSPolicy: corev1.DNSClusterFirst, ServiceAccountName: "checkout-api",
			NodeName: fmt.Sprintf("ip-10-0-%d-%d.eu-west-1.compute.internal", i%8, i%250), SchedulerName: "default-scheduler",
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(int64(300))},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(int64(300))},
			},
			PriorityClassName: "production", Priority: ptr.To(int32(1000)),
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, HostIP: "10.0.3.17", PodIP: fmt.Sprintf("10.1.%d.%d", i/250%250, i%250), StartTime: &now, QOSClass: corev1.PodQOSBurstable,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			},
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "checkout-api", Ready: true, Started: ptr.To(true), Image: "registry.example.com/shop/checkout-api:1.42.0", ImageID: "registry.example.com/shop/checkout-api@sha256:5d2f8c0b7a6e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c", ContainerID: "containerd://0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}},
				{Name: "envoy", Ready: true, Started: ptr.To(true), Image: "docker.io/envoyproxy/envoy:v1.31.0", ImageID: "docker.io/envoyproxy/envoy@sha256:1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809", ContainerID: "containerd://1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}},
			},
		},
	}
}

func realisticConfigMap(i int) *corev1.ConfigMap {
	now := metav1.NewTime(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	return &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("checkout-api-config-%05d", i), Namespace: "checkout", UID: types.UID(fmt.Sprintf("7a1c2b9e-0000-4000-8000-%012d", i)),
			ResourceVersion: fmt.Sprint(200000 + i), CreationTimestamp: now,
			Labels: map[string]string{"app": "checkout-api", "team": "payments"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1",
				FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:data":{".":{},"f:LOG_LEVEL":{},"f:config.yaml":{}},"f:metadata":{"f:labels":{".":{},"f:app":{},"f:team":{}}}}`)}}},
		},
		Data: map[string]string{
			"LOG_LEVEL":   "info",
			"config.yaml": strings.Repeat("feature-flag-with-a-long-name: true\n", 20),
		},
	}
}

func realisticWidget(i int) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1",
		"kind":       "Widget",
		"metadata": map[string]any{
			"name": fmt.Sprintf("widget-%05d", i), "namespace": "checkout", "uid": fmt.Sprintf("8b1c2b9e-0000-4000-8000-%012d", i),
			"resourceVersion": fmt.Sprint(300000 + i), "generation": int64(3), "creationTimestamp": "2026-11-01T12:00:00Z",
			"labels": map[string]any{"app": "checkout-api", "team": "payments"},
			"managedFields": []any{map[string]any{"manager": "widget-controller", "operation": "Update", "apiVersion": "example.com/v1", "time": "2026-11-01T12:00:00Z", "fieldsType": "FieldsV1",
				"fieldsV1": map[string]any{"f:spec": map[string]any{".": map[string]any{}, "f:color": map[string]any{}, "f:size": map[string]any{}}}}},
		},
		"spec":   map[string]any{"color": "teal", "size": int64(3), "replicas": int64(2), "selector": map[string]any{"app": "checkout-api"}},
		"status": map[string]any{"observedGeneration": int64(3), "conditions": []any{map[string]any{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-01T12:00:00Z"}}},
	}}
}
