// Package testfleet runs a fleet of real, independent Kubernetes control planes on loopback:
// one etcd and one kube-apiserver per "cluster", built from the Go module proxy by
// hack/build-bins.sh. Tests use it through Main or Up; hack/fleet.sh drives the same code
// for the demo and for manual fault injection.
//
// Parts:
//   - Fleet (fleet.go): the state folder, start-up, the shared kubeconfig and tear-down.
//   - Cluster (cluster.go): one control plane, its credentials and its fault verbs
//     (Stop/Cont = SIGSTOP/SIGCONT, Kill, Restart, KillEtcd, StartEtcd).
//   - proc (proc.go): a child process tracked by a PID file, so a later command (or a
//     reaper after a crashed test run) can find and signal it.
//   - pki.go: a serving certificate, service-account keys and static tokens per cluster,
//     generated once and kept, so restarts keep every credential valid.
//   - Plan and Seed (seed.go): a deterministic, per-cluster-different inventory.
//
// Each cluster has two static-token users: an admin in system:masters and
// "fleetcache-reader", bound to a get/list/watch ClusterRole. Tokens are random per
// cluster, so one cluster's token is rejected by every other.
package testfleet
