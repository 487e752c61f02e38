package clusters

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/connrotation"
)

// Cluster caches the configured resources of one cluster. It is eventually consistent:
// each resource's cache follows the apiserver with some lag, independently of the other
// resources and clusters, and Status says how far each one is. A Cluster never blocks on
// its apiserver: every call has a timeout and everything runs on its own goroutines.
type Cluster struct {
	target Target
	opts   Options
	log    *zap.Logger

	informerClient *rest.Config // no client-side timeout: watches are long
	// conn is the cluster's one HTTP client: informers, discovery and probes share its
	// connection, so a probe that hangs reveals a connection that stopped delivering, and
	// dialer.CloseAll moves every stream to a new connection.
	conn   *http.Client
	dialer *connrotation.Dialer

	// factories are the context's shared informer factories, one per namespace scope
	// (a factory's namespace is its own); see factoryFor.
	factoriesMu  sync.Mutex
	factories    map[string]informers.SharedInformerFactory
	allFactories []informers.SharedInformerFactory

	mu          sync.Mutex
	resources   map[string]*resourceCache // by display name + "/" + namespace
	columns     map[schema.GroupVersionResource][]PrinterColumn
	cond        Condition
	version     string
	lastProbe   time.Time
	probeErr    error
	discoverErr error
	// lastResolution is the last complete discovery answer's resolution, reused while
	// discovery answers the same.
	lastResolution *resolution
	initialSync    time.Time
	started        time.Time
	stopped        bool
	versionAt      time.Time
	// lastProgress is when the initial sync's progress was last logged.
	lastProgress time.Time
	rediscover   chan struct{}
	done         chan struct{}

	// connResets counts the times the cluster's connections were closed because a probe
	// on them timed out; probes counts the requests probes made.
	connResets, probes atomic.Uint64
	// discoveryRequests counts the requests discovery made (each round: /api and /apis,
	// aggregated).
	discoveryRequests atomic.Uint64
	// resolutions counts the discovery rounds that resolved the configured resources
	// (the others found discovery unchanged); downloads those that read the documents.
	resolutions, downloads atomic.Uint64
	// validators revalidate the discovery documents over discoveryConn (revalidate.go).
	validators    discoveryValidators
	discoveryConn *http.Client
	// schemaConn reads OpenAPI documents for clients (OpenAPIV3); set once connected.
	schemaConn atomic.Pointer[http.Client]
}

// New returns a cluster that starts caching when Start is called.
func New(target Target, opts Options) *Cluster {
	opts.setDefaults()
	c := &Cluster{
		target:     target,
		opts:       opts,
		log:        opts.Logger.With(zap.String("cluster", target.Name)),
		resources:  map[string]*resourceCache{},
		columns:    map[schema.GroupVersionResource][]PrinterColumn{},
		rediscover: make(chan struct{}, 1),
		done:       make(chan struct{}),
		cond:       Condition{Phase: PhasePending, LastTransitionTime: opts.Clock.Now()},
	}
	return c
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.target.Name }

// Done is closed when Start has returned.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Start caches the cluster until ctx ends; it returns only then. Failures never end it:
// they are reported in Status and retried with backoff.
func (c *Cluster) Start(ctx context.Context) error {
	defer close(c.done)
	c.mu.Lock()
	c.started = c.opts.Clock.Now()
	c.mu.Unlock()
	if c.target.Err != nil {
		c.setProbe(c.target.Err)
		<-ctx.Done()
		c.stop()
		return nil
	}
	if c.target.Config.Host != "" {
		names := make([]string, len(c.opts.Resources))
		for i, r := range c.opts.Resources {
			names[i] = r.Name
		}
		c.log.Info("cluster starting", zap.String("context", c.target.Context), zap.String("server", c.target.Config.Host), zap.Strings("resources", names))
	}
	cfg := rest.CopyConfig(c.target.Config)
	cfg.QPS, cfg.Burst = c.opts.QPS, c.opts.Burst
	cfg.UserAgent = "fleetcache"
	c.dialer = connrotation.NewDialer((&net.Dialer{Timeout: c.opts.RequestTimeout, KeepAlive: 30 * time.Second}).DialContext)
	cfg.Dial = c.dialer.DialContext
	c.informerClient = cfg
	conn, err := rest.HTTPClientFor(cfg)
	if err != nil {
		c.setProbe(err)
		<-ctx.Done()
		c.stop()
		return nil
	}
	c.conn = conn
	// Discovery may not hang: the same connection with a timeout.
	timed := *conn
	timed.Timeout = c.opts.RequestTimeout
	timed.Transport = discoveryTransport{conn.Transport, &c.discoveryRequests, &c.validators}
	c.discoveryConn = &timed
	schema := *conn
	schema.Timeout = c.opts.RequestTimeout
	c.schemaConn.Store(&schema)
	disco, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, &timed)
	if err != nil {
		c.setProbe(err)
		<-ctx.Done()
		c.stop()
		return nil
	}
	cached := memory.NewMemCacheClient(disco)

	var wg sync.WaitGroup
	wg.Go(func() { c.probeLoop(ctx) })
	wg.Go(func() { c.discoveryLoop(ctx, cached) })
	<-ctx.Done()
	wg.Wait()
	c.stop()
	return nil
}

// stop stops every informer and waits for them (they end promptly once cancelled).
func (c *Cluster) stop() {
	c.mu.Lock()
	c.stopped = true
	rcs := make([]*resourceCache, 0, len(c.resources))
	for _, rc := range c.resources {
		rcs = append(rcs, rc)
	}
	c.mu.Unlock()
	for _, rc := range rcs {
		rc.cancel()
		<-rc.done
		rc.update(func(f *resourceFacts) { f.stopped = true })
	}
	c.factoriesMu.Lock()
	factories := c.allFactories
	c.factoriesMu.Unlock()
	for _, f := range factories {
		f.Shutdown() // its informers have stopped: this only waits for their goroutines
	}
	c.opts.Budget.set(c, 0)
	if c.dialer != nil {
		// A removed cluster's connection would stay open (and hold its TLS and HTTP/2
		// buffers, ~100 KiB) until the transport's idle timeout.
		c.dialer.CloseAll()
	}
	if c.conn != nil {
		c.conn.CloseIdleConnections()
	}
	c.resourceChanged()
	c.log.Info("cluster stopped")
}

// factoryFor returns the context's shared informer factory for namespace scope ns, with
// inf registered as its informer for obj's type through the factory's construction hook
// (InformerFor). The factory's client is unused: each informer brings its own observed
// protobuf client. A factory holds one informer per type and cannot forget one, so a
// resource that comes back after its informer stopped (its API disabled, then enabled)
// gets a new factory.
func (c *Cluster) factoryFor(ns string, obj runtime.Object, inf cache.SharedIndexInformer) informers.SharedInformerFactory {
	newFunc := func(kubernetes.Interface, time.Duration) cache.SharedIndexInformer { return inf }
	c.factoriesMu.Lock()
	defer c.factoriesMu.Unlock()
	f := c.factories[ns]
	if f != nil && f.InformerFor(obj, newFunc) == inf {
		return f
	}
	f = informers.NewSharedInformerFactoryWithOptions(nil, 0, informers.WithNamespace(ns))
	f.InformerFor(obj, newFunc)
	if c.factories == nil {
		c.factories = map[string]informers.SharedInformerFactory{}
	}
	c.factories[ns] = f
	c.allFactories = append(c.allFactories, f)
	return f
}

// ParseResourceVersion reads an etcd-backed resourceVersion as a number, which is how
// fleetcache orders a cluster's events; other forms read as 0 (unknown).
func ParseResourceVersion(rv string) uint64 {
	n, _ := strconv.ParseUint(rv, 10, 64)
	return n
}

func (c *Cluster) setProbe(err error) {
	c.mu.Lock()
	c.probeErr = err
	if err == nil {
		c.lastProbe = c.opts.Clock.Now()
	}
	c.mu.Unlock()
	c.resourceChanged()
}

// progressInterval is how often a cluster still in its initial sync logs its progress.
const progressInterval = 5 * time.Second

// reportProgress logs, until the initial sync completes, how far it got: large clusters
// take minutes, and an operator should see them moving. The probe loop calls it; it logs
// at most once per progressInterval.
func (c *Cluster) reportProgress() {
	now := c.opts.Clock.Now()
	c.mu.Lock()
	due := c.initialSync.IsZero() && !c.started.IsZero() && now.Sub(c.lastProgress) >= progressInterval && now.Sub(c.started) >= progressInterval
	if due {
		c.lastProgress = now
	}
	c.mu.Unlock()
	if !due {
		return
	}
	s := c.Status()
	objects, synced, served := 0, 0, 0
	for _, r := range s.Resources {
		if r.Phase == PhaseNotServed {
			continue
		}
		served++
		if r.InitialSyncTime != nil {
			synced++
			objects += r.Objects
		} else {
			objects += int(r.Counters.Events["ADDED"]) // streamed so far by a watch-list
		}
	}
	c.log.Info("initial sync in progress", zap.Int("objectsSoFar", objects), zap.Int("resourcesSynced", synced),
		zap.Int("resources", served), zap.String("phase", string(s.Phase)), zap.String("reason", s.Reason))
}

// resourceChanged recomputes the cluster's phase from its probe and resources.
func (c *Cluster) resourceChanged() {
	c.mu.Lock()
	next := c.derive()
	changed := c.cond.moveTo(next, c.opts.Clock.Now())
	c.mu.Unlock()
	if changed {
		c.log.Info("cluster phase changed", conditionFields(next)...)
	}
}

// derive computes the cluster's condition; c.mu is held.
func (c *Cluster) derive() Condition {
	now := c.opts.Clock.Now()
	if c.stopped {
		return Condition{Phase: PhaseStopped, Reason: "Stopped"}
	}
	if c.target.Err != nil {
		return Condition{Phase: PhaseInvalid, Reason: "InvalidKubeconfig", Message: c.target.Err.Error()}
	}
	if errors.Is(c.probeErr, errStorageUnavailable) {
		return Condition{Phase: PhaseDegraded, Reason: "EtcdUnavailable", Message: fmt.Sprintf("apiserver %s: %v; the cache holds the last known state", c.target.Config.Host, c.probeErr)}
	}
	if errors.Is(c.probeErr, errConnectionStalled) {
		return Condition{Phase: PhaseDegraded, Reason: "ConnectionStalled", Message: fmt.Sprintf("apiserver %s: %v", c.target.Config.Host, c.probeErr)}
	}
	if err := c.probeErr; err != nil {
		phase, reason := classify(err)
		if phase != PhaseUnauthorized && phase != PhaseForbidden {
			phase = PhaseUnreachable
		}
		if phase == PhaseForbidden {
			phase, reason = PhaseSynced, "" // /version forbidden: judge by the resources
		} else {
			return Condition{Phase: phase, Reason: reason, Message: fmt.Sprintf("apiserver %s: %s: %v", c.target.Config.Host, reason, err)}
		}
	}
	if len(c.resources) == 0 {
		if c.discoverErr != nil {
			phase, reason := classify(c.discoverErr)
			if phase != PhaseUnauthorized {
				phase = PhaseUnreachable
			}
			return Condition{Phase: phase, Reason: reason, Message: c.discoverErr.Error()}
		}
		if c.started.IsZero() {
			return Condition{Phase: PhasePending}
		}
		return Condition{Phase: PhaseSyncing, Reason: "Discovery"}
	}
	counts := map[Phase][]string{}
	keys := make([]string, 0, len(c.resources))
	for k := range c.resources {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rc := c.resources[k]
		rc.mu.Lock()
		p := rc.cond.Phase
		rc.mu.Unlock()
		counts[p] = append(counts[p], rc.display)
	}
	served := len(c.resources) - len(counts[PhaseNotServed])
	switch {
	case len(counts[PhaseUnauthorized]) > 0:
		return Condition{Phase: PhaseUnauthorized, Reason: "Unauthorized", Message: "the apiserver rejected the credentials"}
	case served > 0 && len(counts[PhaseForbidden]) == served:
		return Condition{Phase: PhaseForbidden, Reason: "Forbidden", Message: "forbidden to list: " + strings.Join(counts[PhaseForbidden], ", ")}
	case len(counts[PhaseSynced]) == served:
		if c.initialSync.IsZero() {
			c.initialSync = now
		}
		return Condition{Phase: PhaseSynced}
	case c.initialSync.IsZero():
		msg := fmt.Sprintf("%d of %d resources synced", len(counts[PhaseSynced]), served)
		if now.Sub(c.started) > c.opts.InitialSyncTimeout {
			return Condition{Phase: PhaseSyncing, Reason: "InitialSyncTimeout", Message: fmt.Sprintf("initial sync not complete after %s (%s); retrying", c.opts.InitialSyncTimeout, msg)}
		}
		return Condition{Phase: PhaseSyncing, Message: msg}
	}
	var problems []string
	for _, p := range []Phase{PhaseForbidden, PhaseDegraded, PhaseSyncing, PhasePending} {
		if len(counts[p]) > 0 {
			problems = append(problems, fmt.Sprintf("%s: %s", p, strings.Join(counts[p], ", ")))
		}
	}
	return Condition{Phase: PhaseDegraded, Reason: "ResourcesNotSynced", Message: strings.Join(problems, "; ")}
}

// Status returns the cluster's current status, resources sorted by name and namespace.
func (c *Cluster) Status() ClusterStatus {
	c.mu.Lock()
	s := ClusterStatus{
		Condition: c.cond, Name: c.target.Name, Context: c.target.Context, Version: c.version,
		InitialSyncTime: timePtr(c.initialSync), LastProbeTime: timePtr(c.lastProbe),
	}
	if c.target.Config != nil {
		s.Server = c.target.Config.Host
	}
	rcs := make([]*resourceCache, 0, len(c.resources))
	for _, rc := range c.resources {
		rcs = append(rcs, rc)
	}
	c.mu.Unlock()
	s.ConnectionResets, s.Probes, s.DiscoveryRequests = c.connResets.Load(), c.probes.Load(), c.discoveryRequests.Load()
	proven := true
	var worst float64
	for _, rc := range rcs {
		r := rc.status()
		s.Resources = append(s.Resources, r)
		switch {
		case r.Phase == PhaseNotServed:
		case r.StalenessSeconds == nil:
			proven = false
		default:
			worst = max(worst, *r.StalenessSeconds)
		}
	}
	if proven && len(rcs) > 0 {
		s.StalenessSeconds = &worst
	}
	sort.Slice(s.Resources, func(i, j int) bool {
		a, b := s.Resources[i], s.Resources[j]
		return a.Resource < b.Resource || a.Resource == b.Resource && a.Namespace < b.Namespace
	})
	return s
}

// Freshness returns how current the cluster's cache of resource (its display name,
// e.g. "deployments.apps") is. It takes the cluster's lock and each of the resource's
// informers' locks briefly, and copies nothing else.
func (c *Cluster) Freshness(resource string) Freshness {
	c.mu.Lock()
	f := Freshness{Phase: c.cond.Phase, Reason: c.cond.Reason, Message: c.cond.Message}
	var rcs []*resourceCache
	for _, rc := range c.resources {
		if rc.display == resource {
			rcs = append(rcs, rc)
		}
	}
	c.mu.Unlock()
	now := c.opts.Clock.Now()
	f.Proven = len(rcs) > 0
	for _, rc := range rcs {
		rc.mu.Lock()
		if cond := rc.condNow(); f.ResourcePhase == "" || phaseRank(cond.Phase) > phaseRank(f.ResourcePhase) {
			f.ResourcePhase, f.ResourceReason = cond.Phase, cond.Reason
		}
		if st, ok := rc.proof.staleness(now); ok {
			f.Staleness = max(f.Staleness, st)
		} else if !rc.facts.notServed {
			f.Proven = false
		}
		if rc.facts.lastEv.After(f.LastEventTime) {
			f.LastEventTime = rc.facts.lastEv
		}
		rc.mu.Unlock()
	}
	return f
}
