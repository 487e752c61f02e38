package clusters

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// RequestBudget shares a fleet-wide rate of idle requests among the clusters: the
// probes (one per Options.ProbeInterval per cluster), the idle proofs (a watch renewal
// and a one-object list per resource per Options.IdleProofInterval) and rediscovery
// (two requests per Options.RediscoveryInterval). While the fleet's clusters would make
// more than the budget at the configured intervals, every cluster's ProbeInterval,
// IdleProofInterval, StaleAfter and RediscoveryInterval (and the minute between reads of
// its apiserver's version) are stretched by the same factor
// (Scale), so that idle CPU and the load on apiservers stay bounded as the fleet grows.
// The price is freshness: staleness bounds, how soon a frozen cluster is reported and how
// soon a new CRD is picked up grow by the same factor. A nil budget never stretches
// anything.
type RequestBudget struct {
	perSecond float64

	mu    sync.Mutex
	costs map[*Cluster]float64 // requests per second each cluster makes at scale 1
	scale atomic.Uint64        // float64 bits
}

// NewRequestBudget allows perSecond freshness requests per second across the fleet;
// perSecond <= 0 means no budget (the configured intervals always apply).
func NewRequestBudget(perSecond float64) *RequestBudget {
	b := &RequestBudget{perSecond: perSecond, costs: map[*Cluster]float64{}}
	b.scale.Store(math.Float64bits(1))
	return b
}

// Scale is the factor by which the clusters' freshness intervals are stretched: 1 while
// the fleet is within the budget.
func (b *RequestBudget) Scale() float64 {
	if b == nil {
		return 1
	}
	return math.Float64frombits(b.scale.Load())
}

// set records what c costs at scale 1 (0: c is gone) and recomputes the scale.
func (b *RequestBudget) set(c *Cluster, perSecond float64) {
	if b == nil || b.perSecond <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if perSecond <= 0 {
		delete(b.costs, c)
	} else {
		b.costs[c] = perSecond
	}
	var total float64
	for _, v := range b.costs {
		total += v
	}
	b.scale.Store(math.Float64bits(max(1, total/b.perSecond)))
}

// discoveryRound is the requests one discovery round makes: /api and /apis, each
// answered with aggregated discovery (every group and resource at once).
const discoveryRound = 2

// freshnessCost is the requests per second a cluster with n informers makes at scale 1.
func (o *Options) freshnessCost(n int) float64 {
	perSecond := func(d time.Duration) float64 { return float64(time.Second) / float64(d) }
	return perSecond(o.ProbeInterval) + 2*float64(n)*perSecond(o.IdleProofInterval) + discoveryRound*perSecond(o.RediscoveryInterval)
}

func scaled(d time.Duration, s float64) time.Duration { return time.Duration(float64(d) * s) }

// probeInterval, idleProofInterval and staleAfter are the cluster's intervals under the
// fleet's request budget.
func (c *Cluster) probeInterval() time.Duration {
	return scaled(c.opts.ProbeInterval, c.opts.Budget.Scale())
}

func (c *Cluster) idleProofInterval() time.Duration {
	return scaled(c.opts.IdleProofInterval, c.opts.Budget.Scale())
}

func (c *Cluster) rediscoveryInterval() time.Duration {
	return scaled(c.opts.RediscoveryInterval, c.opts.Budget.Scale())
}

func (c *Cluster) staleAfter() time.Duration {
	return scaled(c.opts.StaleAfter, c.opts.Budget.Scale())
}

// updateBudget tells the budget what the cluster costs now.
func (c *Cluster) updateBudget() {
	cost := 0.0
	if !c.isStopped() {
		cost = c.opts.freshnessCost(len(c.informers()))
	}
	c.opts.Budget.set(c, cost)
}

func (c *Cluster) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}
