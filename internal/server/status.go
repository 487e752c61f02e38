package server

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func statusOf(obj runtime.Object) (*metav1.Status, bool) {
	st, ok := obj.(*metav1.Status)
	return st, ok
}
