package clusters

import (
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"
)

// ResourceSpec names a resource to cache and what part of it.
type ResourceSpec struct {
	// Name as kubectl takes it: "pods", "deployments.apps", "deploy", "widgets.example.com",
	// or "*" for every resource the cluster can list and watch.
	Name string `json:"name"`
	// Namespaces limits a namespaced resource to these namespaces (one informer each).
	// Empty means all namespaces.
	Namespaces []string `json:"namespaces,omitempty"`
	// LabelSelector and FieldSelector are passed to the apiserver's list and watch.
	LabelSelector string `json:"labelSelector,omitempty"`
	FieldSelector string `json:"fieldSelector,omitempty"`
	// Indexes to build over the resource, in addition to DefaultIndexes.
	Indexes []IndexSpec `json:"indexes,omitempty"`
}

// Options tune a cluster. The zero value of a field means its default (see setDefaults).
type Options struct {
	Resources []ResourceSpec
	// QPS and Burst limit the cluster's client. Default 50 and 100.
	QPS   float32
	Burst int
	// RequestTimeout bounds discovery, probes and establishing a watch. Default 10s.
	RequestTimeout time.Duration
	// ListTimeout bounds one list call (a page, or the whole list when unpaginated).
	// Default 2m.
	ListTimeout time.Duration
	// InitialSyncTimeout is how long the cluster may take to sync before it is reported as
	// late (it keeps retrying) and stops holding back readiness. Default 2m.
	InitialSyncTimeout time.Duration
	// ProbeInterval is how often the cluster is probed: a consistent one-object list that
	// checks the apiserver answers and proves each resource's cache current (freshness.go).
	// Default 2s: a busy resource's staleness bound is about this plus the round trip.
	ProbeInterval time.Duration
	// IdleProofInterval is how long a watch lasts before it is renewed; its resource is
	// probed just before the apiserver's end-of-watch bookmark, which proves an idle
	// resource current. It bounds an idle resource's staleness; each renewal costs one
	// watch and one one-object list. Default 15s.
	IdleProofInterval time.Duration
	// StaleAfter is how long a resource may go without proof that its cache is current
	// before it is reported Stale (Degraded). Default IdleProofInterval + 2 ProbeInterval
	// + 5s: an idle resource is proven once per IdleProofInterval.
	StaleAfter time.Duration
	// RediscoveryInterval is how often discovery is refreshed to notice resources that
	// appear (a CRD installed) or disappear. Default 30s.
	RediscoveryInterval time.Duration
	// ListLimiter caps concurrent initial lists across the fleet. Nil: no cap.
	ListLimiter *ListLimiter
	// Budget stretches ProbeInterval, IdleProofInterval and StaleAfter while the fleet
	// would make more freshness requests than it allows (see RequestBudget). Nil: the
	// intervals always apply.
	Budget *RequestBudget
	// SecretAnnotations are annotation keys whose values Secrets keep in the cache. A
	// Secret never keeps its values: data and stringData are emptied, and so is every
	// other annotation's value (its key is kept), since some deploy tools copy the whole
	// manifest into an annotation. Default: none.
	SecretAnnotations []string
	// Handler receives every object change and informer stop (the aggregator). Nil: none.
	Handler EventHandler
	Logger  *zap.Logger
	Clock   clock.Clock
}

// Defaults, with the reasons for their values.
const (
	// defaultQPS and defaultBurst: client-go's own 5/10 throttles the start of a cluster
	// with a dozen resources (a list and a watch each, discovery, probes); 50/100 lets it
	// start at once and still bounds a runaway loop.
	defaultQPS   = 50
	defaultBurst = 100
	// defaultRequestTimeout: a frozen apiserver hangs instead of refusing; 10s is far
	// above any healthy round trip and short enough to report the cluster quickly.
	defaultRequestTimeout = 10 * time.Second
	// defaultListTimeout: a list of a few hundred thousand objects takes tens of seconds
	// on a busy apiserver; 2m bounds a stuck one without cutting a large one short.
	defaultListTimeout = 2 * time.Minute
	// defaultInitialSyncTimeout: past this a slow cluster stops holding back readiness
	// (it keeps syncing; its answers say so).
	defaultInitialSyncTimeout = 2 * time.Minute
	// defaultProbeInterval: a busy resource's staleness bound is about this plus the
	// round trip; one small request per cluster every 2s is cheap for an apiserver.
	defaultProbeInterval = 2 * time.Second
	// defaultIdleProofInterval: an idle resource's bound stays below about this; each
	// renewal costs a watch and a one-object list per resource.
	defaultIdleProofInterval = 15 * time.Second
	// staleMargin is what StaleAfter adds to the idle proof interval and two probe
	// intervals: the apiserver's bookmark timer (1s) and a slow round trip.
	staleMargin = 5 * time.Second
	// DefaultProbeBudget is the fleet-wide idle requests per second (RequestBudget):
	// about 43 clusters of 13 resources at the default intervals (2.3 requests/s each).
	// Measured at 0.2-0.5 ms of daemon CPU per request (BenchmarkPerClusterOverhead), it
	// keeps the daemon's idle CPU at a few percent of a core however many clusters.
	DefaultProbeBudget = 100
	// defaultRediscoveryInterval: how soon a CRD installed or deleted is noticed, at one
	// discovery round per cluster per interval.
	defaultRediscoveryInterval = 30 * time.Second
)

// setDefaults fills every zero field with its default; the one place they are set.
func (o *Options) setDefaults() {
	if o.QPS == 0 {
		o.QPS = defaultQPS
	}
	if o.Burst == 0 {
		o.Burst = defaultBurst
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = defaultRequestTimeout
	}
	if o.ListTimeout == 0 {
		o.ListTimeout = defaultListTimeout
	}
	if o.InitialSyncTimeout == 0 {
		o.InitialSyncTimeout = defaultInitialSyncTimeout
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = defaultProbeInterval
	}
	if o.IdleProofInterval == 0 {
		o.IdleProofInterval = defaultIdleProofInterval
	}
	// A watch shorter than the bookmark lead would end before its proof.
	o.IdleProofInterval = max(o.IdleProofInterval, shortWatch)
	if o.StaleAfter == 0 {
		o.StaleAfter = o.IdleProofInterval + 2*o.ProbeInterval + staleMargin
	}
	if o.RediscoveryInterval == 0 {
		o.RediscoveryInterval = defaultRediscoveryInterval
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if len(o.Resources) == 0 {
		o.Resources = DefaultResources()
	}
}

// DefaultResources is what fleetcache caches when the configuration names nothing.
func DefaultResources() []ResourceSpec {
	var out []ResourceSpec
	for _, n := range []string{"namespaces", "nodes", "pods", "services", "configmaps", "deployments.apps", "replicasets.apps", "statefulsets.apps", "daemonsets.apps", "jobs.batch", "cronjobs.batch", "ingresses.networking.k8s.io", "persistentvolumeclaims"} {
		out = append(out, ResourceSpec{Name: n})
	}
	return out
}
