package clusters

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/fleetcache/fleetcache/internal/fixtures"
)

func realisticPod(i int) *corev1.Pod                   { return fixtures.RealisticPod(i) }
func realisticConfigMap(i int) *corev1.ConfigMap       { return fixtures.RealisticConfigMap(i) }
func realisticWidget(i int) *unstructured.Unstructured { return fixtures.RealisticWidget(i) }
