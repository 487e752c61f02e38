// Package e2e runs the fleetcache binary against the real local fleet and checks its
// answers against kubectl run on every cluster.
package e2e
