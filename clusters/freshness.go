package clusters

import "time"

// How fleetcache knows how fresh a resource's cache is.
//
// A freshness probe is a consistent one-object list (resourceVersion ""): the apiserver
// answers it, from its watch cache, with a resourceVersion R at least as new as every
// change committed before the request was sent. Once the resource's watch has delivered an
// event or bookmark with a resourceVersion >= R (resourceVersions of one etcd are
// comparable, KEP-5504), the cache holds every change made before the probe was sent. So
// "now minus the send time of the newest probe the cache has reached" is an upper bound on
// how far the cache is behind, whatever the one-way delays and clock offsets: it is the
// staleness bound reported everywhere.
//
// A busy resource reaches each probe with its next event. An idle one only moves with
// bookmarks, and the apiserver sends a watch a bookmark two seconds before the watch's
// timeout (and otherwise once a minute); the bookmark carries the revision of that
// resource's watch cache, which only a probe of that resource moves forward. So every
// watch is given a short timeout (Options.IdleProofInterval) and its resource is probed
// just before the bookmark is due: an idle resource is proven current once per interval.
//
// All of this costs requests: per cluster one probe per ProbeInterval, per resource a
// watch and a probe per IdleProofInterval. A fleet-wide RequestBudget caps their sum:
// past it, every cluster's ProbeInterval, IdleProofInterval and StaleAfter grow by the
// same factor, so the bounds stay sound and honest, only larger (a fleet of 1,000
// clusters of 13 resources within 100 requests/s: about 22x, idle resources proven
// every ~5.5 minutes, a frozen cluster noticed within ~45s plus the request timeout).

// probe is one freshness probe's answer: when it was sent and the revision it returned.
type probe struct {
	sent time.Time
	rv   uint64
}

// maxPendingProbes bounds the probes waiting for a cache that does not move (a stalled
// watch); the oldest are dropped: a newer probe proves more.
const maxPendingProbes = 64

// proof is what one resource's cache can prove about its own freshness. Guarded by its
// owner's lock.
type proof struct {
	// cacheRV is the newest resourceVersion the cache has seen (event, bookmark or list).
	cacheRV uint64
	// probedRV is the newest revision a probe returned.
	probedRV uint64
	pending  []probe // probes the cache has not reached yet, oldest first
	// provenAt is the send time of the newest probe the cache has reached: the cache held
	// everything the apiserver had then.
	provenAt time.Time
	// disruptedAt is when the cluster or the resource's watch last failed: a proof made
	// before it says nothing about the cache after it.
	disruptedAt time.Time
	// syncLag records, per probe, the time from sending it until the cache reached it.
	syncLag *histogram
}

func newProof() proof { return proof{syncLag: newHistogram(LagBuckets)} }

// probed records a probe's answer, received at now.
func (p *proof) probed(sent time.Time, rv uint64, now time.Time) {
	if rv > p.probedRV {
		p.probedRV = rv
	}
	if rv <= p.cacheRV {
		p.reached(probe{sent: sent, rv: rv}, now)
		return
	}
	if len(p.pending) == maxPendingProbes {
		p.pending = append(p.pending[:0], p.pending[1:]...)
	}
	p.pending = append(p.pending, probe{sent: sent, rv: rv})
}

// advance records that the cache now holds rv, and resolves the probes it reached.
func (p *proof) advance(rv uint64, now time.Time) {
	if rv <= p.cacheRV {
		return
	}
	p.cacheRV = rv
	kept := p.pending[:0]
	for _, pr := range p.pending {
		if pr.rv <= rv {
			p.reached(pr, now)
		} else {
			kept = append(kept, pr)
		}
	}
	p.pending = kept
}

// relisted follows a list that may go back in time (the cluster lost data, or was
// restored from a backup): the cache is what the list says.
func (p *proof) relisted(rv uint64, now time.Time) {
	if rv < p.cacheRV {
		p.cacheRV = 0
	}
	p.advance(rv, now)
}

// listed records a consistent list sent at sent that returned rv: the cache holds what
// the apiserver had then (not a probe: it adds no sync-lag sample).
func (p *proof) listed(sent time.Time, rv uint64, now time.Time) {
	p.relisted(rv, now)
	if rv > 0 && sent.After(p.provenAt) {
		p.provenAt = sent
	}
}

func (p *proof) reached(pr probe, now time.Time) {
	p.syncLag.observe(now.Sub(pr.sent).Seconds())
	if pr.sent.After(p.provenAt) {
		p.provenAt = pr.sent
	}
}

// disrupted records a failure after which only a new probe proves anything.
func (p *proof) disrupted(now time.Time) {
	if now.After(p.disruptedAt) {
		p.disruptedAt = now
	}
}

// staleness is the bound on how far the cache is behind at now; false when nothing was
// ever proven.
func (p *proof) staleness(now time.Time) (time.Duration, bool) {
	if p.provenAt.IsZero() {
		return 0, false
	}
	return max(now.Sub(p.provenAt), 0), true
}

// current reports whether the cache is proven current: by a probe sent after the last
// disruption, and no longer than staleAfter ago.
func (p *proof) current(now time.Time, staleAfter time.Duration) bool {
	return !p.provenAt.IsZero() && p.provenAt.After(p.disruptedAt) && now.Sub(p.provenAt) <= staleAfter
}

// awaiting reports whether a probe answered since the last disruption waits for the
// cache to reach its revision: the next event or bookmark proves the cache.
func (p *proof) awaiting() bool {
	return len(p.pending) > 0 && p.pending[len(p.pending)-1].sent.After(p.disruptedAt)
}

// revisionLag is how many revisions the newest probe is ahead of the cache.
func (p *proof) revisionLag() int64 {
	if p.probedRV > p.cacheRV {
		return int64(p.probedRV - p.cacheRV)
	}
	return 0
}
