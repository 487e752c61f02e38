// Package sharding spreads a fleet's clusters over several fleetcache replicas.
//
// Replicas find each other through Kubernetes Leases (coordination.k8s.io/v1) in a home
// cluster: each replica holds a Lease of its own, named after its identity, labelled with
// its group and annotated with the address its peers reach it on, and renews it every
// RenewInterval. A replica is a member while its Lease keeps being renewed: a Lease whose
// renewals stop is dropped LeaseDuration after the last renewal this replica saw (the time
// is this replica's own clock, as client-go's leader election does, so clock skew between
// machines does not matter). A replica that stops cleanly deletes its Lease, and its peers
// take its clusters over at once.
//
// Clusters are assigned by rendezvous (highest-random-weight) hashing over the live
// members: each cluster goes to the Replicas members with the highest hash of (member,
// cluster). Every replica reads the same kubeconfig and sees the same Leases, so every
// replica computes the same assignment without talking to the others; when a member joins
// or leaves, only the clusters whose top members changed move (about 1/N of them), and
// adding or removing a cluster moves no other cluster.
//
// Trust: a Lease and an address are things anyone who may write Leases in the namespace
// can make up, so neither is trusted by itself. The replicas of a group share a key
// (groupkey.go: the Secret <group>-group-key, which the first replica creates, or a file).
// A replica counts as a member, and receives calls, only after proving it: its Lease
// carries an HMAC under the key of its group, name, holder and address (ProofAnnotation);
// a Lease without a valid one is refused and reported (Refused, the sharding block of
// /api/v1/clusters). A replica asking a peer on a caller's behalf never sends the caller's
// credentials: it sends the caller's identity and scope, signed with the key, made out to
// that peer and valid for a minute (peer.go, PeerHeader), and the peer's
// PeerAuthenticator accepts nothing else as a peer's. Continue tokens are signed with a
// key derived from the group key, so that any replica continues a page another began.
//
// There is no consensus of our own: the Leases' renewals and expiry and the apiserver's
// optimistic concurrency on each replica's own Lease are the whole mechanism. Two replicas
// may briefly disagree on membership (each sees a Lease change when its watch delivers
// it); during that window a cluster may be cached by one replica too many or too few, and
// answers say so per cluster.
//
// Parts:
//   - groupkey.go, peer.go, client.go: the group key, the assertions replicas send each
//     other instead of credentials, the client they send them with (peerCAFile).
//   - membership.go, rendezvous.go, source.go: Leases and their proofs, ownership, the
//     clusters this replica caches.
//   - router.go, list.go, watch.go, cursor.go: /api/v1 through any replica (pages, counts,
//     gets, watches and their cursors).
//   - fleet.go, fleetwatch.go, kubeapi.go: the Kubernetes read API (/fleet merged across
//     replicas, /clusters/<name> passed to a replica that caches it).
package sharding
