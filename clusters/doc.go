// Package clusters will own one cluster's life: kubeconfig context, rest config,
// discovery, shared informer factory and sync status.
package clusters
