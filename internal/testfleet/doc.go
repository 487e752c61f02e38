// Package testfleet runs a fleet of real, independent Kubernetes control planes on loopback:
// one etcd and one kube-apiserver per "cluster", built from the Go module proxy by
// hack/build-bins.sh. Tests use it through Main or Up; hack/fleet.sh drives the same code
// for the demo and for manual fault injection.
//
// The fleet is mixed, because real fleets are (Options.Uniform turns it off):
//   - alpha (index 0) and any cluster past charlie: kube-apiserver CurrentVersion
//     (v1.37.2), watch-list on, one etcd. alpha is the fault tests' victim.
//   - bravo (MixedSplitIndex): the same apiserver, but its ConfigMaps live on a second etcd
//     of its own (--etcd-servers-overrides=/configmaps#...; folder etcd-configmaps/, log
//     etcd-configmaps.log), started, stopped and restarted with the cluster. A ConfigMap's
//     resourceVersion is that etcd's revision: a sequence apart from the rest of bravo's,
//     so code that compares revisions across resources of one cluster meets a cluster
//     where that does not hold. KillConfigMapsEtcd / StartConfigMapsEtcd fail it alone.
//   - charlie (MixedOldIndex): kube-apiserver OldVersion (v1.32.13, the binary
//     OldAPIServer) with --feature-gates=WatchList=false. It refuses watch-list streams
//     (sendInitialEvents: 422), so client-go informers fall back to LIST then WATCH, as
//     against apiservers before 1.32 or with the gate off; and its /version, discovery and
//     table printers are those of an older minor.
//
// fleet.json records each cluster's apiserver binary, version, feature gates and second
// etcd (Layout 2). Up refuses a folder of another layout or made with other options
// (ErrLayout: destroy it and start again); Open loads any, so it can still be stopped.
//
// Parts:
//   - Fleet (fleet.go): the state folder, start-up, the shared kubeconfig and tear-down.
//   - Cluster (cluster.go): one control plane, its credentials and its fault verbs
//     (Stop/Cont = SIGSTOP/SIGCONT, Kill, Restart, KillEtcd, StartEtcd,
//     KillConfigMapsEtcd, StartConfigMapsEtcd).
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
