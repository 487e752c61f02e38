//go:build tools

// Package tools pins the command hack/build-bins.sh builds, so go mod tidy keeps it.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
