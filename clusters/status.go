package clusters

import (
	"context"
	"errors"
	"net"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// Phase is where a cluster or one of its resources stands.
type Phase string

const (
	// PhasePending: not started yet.
	PhasePending Phase = "Pending"
	// PhaseSyncing: the initial list has not completed.
	PhaseSyncing Phase = "Syncing"
	// PhaseSynced: the initial list completed and the watch is healthy; the cache follows
	// the cluster (with the lag the freshness fields report).
	PhaseSynced Phase = "Synced"
	// PhaseDegraded: synced once, but list or watch calls now fail and are retried; the
	// cache holds the last known state, which may be stale.
	PhaseDegraded Phase = "Degraded"
	// PhaseUnreachable: the apiserver does not answer (refused, timed out, DNS, TLS).
	PhaseUnreachable Phase = "Unreachable"
	// PhaseUnauthorized: the apiserver rejects the credentials (401).
	PhaseUnauthorized Phase = "Unauthorized"
	// PhaseForbidden: the credentials may not list or watch the resource (403).
	PhaseForbidden Phase = "Forbidden"
	// PhaseNotServed: the cluster does not serve the resource (e.g. its CRD is not
	// installed). Discovery is retried, and caching starts when it appears.
	PhaseNotServed Phase = "NotServed"
	// PhaseStopped: removed from the configuration or shutting down; holds no objects.
	PhaseStopped Phase = "Stopped"
)

// Phases lists every phase, for state-set metrics.
var Phases = []Phase{PhasePending, PhaseInvalid, PhaseSyncing, PhaseSynced, PhaseDegraded, PhaseUnreachable, PhaseUnauthorized, PhaseForbidden, PhaseNotServed, PhaseStopped}

// Condition is a phase with why and since when.
type Condition struct {
	Phase Phase `json:"phase"`
	// Reason is a CamelCase machine-readable cause, e.g. "ListTimeout", "Forbidden".
	Reason string `json:"reason,omitempty"`
	// Message says the same for a person, with the underlying error.
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// moveTo makes next the condition and reports whether that was a transition (phase or
// reason changed, which restamps LastTransitionTime); otherwise only the message follows.
func (c *Condition) moveTo(next Condition, now time.Time) bool {
	if next.Phase == c.Phase && next.Reason == c.Reason {
		c.Message = next.Message
		return false
	}
	next.LastTransitionTime = now
	*c = next
	return true
}

// ResourceStatus is the state of one cached resource in one cluster.
type ResourceStatus struct {
	Condition
	// Resource is the resolved resource, e.g. "deployments.apps"; Requested is how the
	// configuration named it (e.g. "deploy").
	Resource  string `json:"resource"`
	Requested string `json:"requested,omitempty"`
	Namespace string `json:"namespace,omitempty"` // empty: all namespaces
	Kind      string `json:"kind,omitempty"`
	// Objects currently cached.
	Objects int `json:"objects"`
	// InitialSyncTime is when the first complete list was stored.
	InitialSyncTime *time.Time `json:"initialSyncTime,omitempty"`
	// LastListTime is when the last list (or the initial part of a watch-list stream)
	// completed successfully.
	LastListTime *time.Time `json:"lastListTime,omitempty"`
	// LastEventTime is when the last watch event (bookmarks included) arrived.
	LastEventTime *time.Time `json:"lastEventTime,omitempty"`
	// WatchConnected is true while a watch stream is open.
	WatchConnected bool `json:"watchConnected"`
	// ListPath is how the last complete list came: "WatchList" (a watch-list stream) or
	// "List" (LIST requests: the apiserver refused watch-list, or the stream failed).
	// Empty until the first list.
	ListPath string `json:"listPath,omitempty"`
	// StalenessSeconds bounds how far the cache may be behind the apiserver: the time
	// since the newest freshness probe whose revision the cache has reached was sent.
	// Absent until the first such probe.
	StalenessSeconds *float64 `json:"stalenessSeconds,omitempty"`
	// ResourceVersionLag is how many revisions the cache is behind the cluster's current
	// resourceVersion, as of the last probe.
	ResourceVersionLag int64 `json:"resourceVersionLag"`
	// Counters are cumulative observations of list and watch calls, for metrics.
	Counters Counters `json:"-"`
}

// ClusterStatus is the state of one cluster and all its resources.
type ClusterStatus struct {
	Condition
	Name    string `json:"name"`
	Context string `json:"context"`
	Server  string `json:"server"`
	// Version is the apiserver's git version, once known.
	Version string `json:"version,omitempty"`
	// InitialSyncTime is when every resource first reached Synced (or NotServed).
	InitialSyncTime *time.Time `json:"initialSyncTime,omitempty"`
	// LastProbeTime is when the apiserver last answered the freshness probe.
	LastProbeTime *time.Time `json:"lastProbeTime,omitempty"`
	// StalenessSeconds is the largest staleness bound of the cluster's served resources;
	// absent while one of them has none.
	StalenessSeconds *float64 `json:"stalenessSeconds,omitempty"`
	// ConnectionResets counts the times the cluster's connections were closed because a
	// probe on them timed out (a connection that stopped delivering).
	ConnectionResets uint64 `json:"connectionResets"`
	// Probes counts the requests freshness and health probes made to the apiserver.
	Probes uint64 `json:"probes"`
	// DiscoveryRequests counts the requests discovery made to the apiserver.
	DiscoveryRequests uint64           `json:"discoveryRequests"`
	Resources         []ResourceStatus `json:"resources"`
}

// Objects is the number of objects cached for the cluster.
func (s ClusterStatus) Objects() int {
	n := 0
	for _, r := range s.Resources {
		n += r.Objects
	}
	return n
}

// classify maps an error from a list, watch or discovery call to a phase and reason.
func classify(err error) (Phase, string) {
	var netErr net.Error
	switch {
	case apierrors.IsUnauthorized(err):
		return PhaseUnauthorized, "Unauthorized"
	case apierrors.IsForbidden(err):
		return PhaseForbidden, "Forbidden"
	case apierrors.IsNotFound(err):
		return PhaseNotServed, "NotFound"
	case errors.Is(err, context.DeadlineExceeded), apierrors.IsTimeout(err), apierrors.IsServerTimeout(err),
		errors.As(err, &netErr) && netErr.Timeout():
		return PhaseUnreachable, "Timeout"
	case apierrors.IsTooManyRequests(err):
		return PhaseDegraded, "TooManyRequests"
	case utilnet.IsConnectionRefused(err):
		return PhaseUnreachable, "ConnectionRefused"
	case errors.As(err, &netErr):
		return PhaseUnreachable, "NetworkError"
	case apierrors.IsResourceExpired(err), apierrors.IsGone(err):
		return PhaseDegraded, "Expired"
	}
	return PhaseDegraded, "Error"
}

// PhaseInvalid: the kubeconfig context cannot be used (no such cluster or user entry,
// unreadable credentials file, ...). Fix the kubeconfig; it is reloaded on change.
const PhaseInvalid Phase = "Invalid"

// Freshness is how current one cluster's cache of one resource is: what an answer says
// about its part. It is read without copying the cluster's status.
type Freshness struct {
	// Phase, Reason and Message are the cluster's condition.
	Phase   Phase
	Reason  string
	Message string
	// ResourcePhase and ResourceReason are the resource's (the worst of its informers');
	// empty when the cluster does not cache it.
	ResourcePhase  Phase
	ResourceReason string
	// Staleness bounds how far the resource's cache may be behind; Proven is false when
	// no probe was reached yet.
	Staleness time.Duration
	Proven    bool
	// LastEventTime is when the resource's watch last delivered an event or bookmark.
	LastEventTime time.Time
}

// Current reports whether the answer's part from this cluster is complete and proven
// fresh: cluster and resource Synced (or the resource not served there).
func (f Freshness) Current() bool {
	return f.Phase == PhaseSynced && (f.ResourcePhase == PhaseSynced || f.ResourcePhase == PhaseNotServed || f.ResourcePhase == "")
}

// phaseRank orders resource phases from healthy to worst, to report the worst informer.
func phaseRank(p Phase) int {
	switch p {
	case PhaseSynced:
		return 0
	case PhaseNotServed:
		return 1
	case PhaseDegraded:
		return 2
	case PhaseSyncing, PhasePending:
		return 3
	}
	return 4
}
