package clusters

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Probes (see freshness.go for what they prove). Every ProbeInterval the cluster lists
// one object of one of its synced resources with a consistent read over the connection
// its watches use, and each watch's resource is probed again just before the watch's
// closing bookmark. A probe's revision proves only the resource it listed: resources
// kept in another etcd (kube-apiserver's --etcd-servers-overrides) or served by an
// aggregated apiserver count revisions of their own, and the storage layout is not
// visible through the API. A probe that fails marks every resource disrupted, and one
// that times out closes the cluster's connections so that its watches move to new ones.

// versionInterval is how often the apiserver's version is read again (it changes only
// on upgrades); the fleet's request budget stretches it like the probe interval (read
// every minute, 1,000 clusters made 11 requests/s outside the budget).
const versionInterval = time.Minute

// errStorageUnavailable: the apiserver answers but its etcd does not; nothing changes in
// the cluster and the cache cannot follow it.
var errStorageUnavailable = errors.New("the apiserver reports its etcd failing")

// errConnectionStalled: a probe timed out on the cluster's connection while a new
// connection is answered at once: the old one had stopped delivering (and was closed).
var errConnectionStalled = errors.New("a request on the cluster's connection timed out while a new connection answered; its streams were moved to new connections")

func (c *Cluster) probeLoop(ctx context.Context) {
	for {
		start := c.opts.Clock.Now()
		c.probeOnce(ctx)
		// One probe per interval from send to send, so that a slow way back does not
		// stretch it; jittered, so that clusters started together do not probe together;
		// re-read each time: the fleet's request budget may have stretched it.
		t := time.NewTimer(max(wait.Jitter(c.probeInterval(), 0.1)-c.opts.Clock.Since(start), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// probeOnce runs one probe and re-derives every phase (a staleness bound grows with time).
func (c *Cluster) probeOnce(ctx context.Context) {
	var err error
	if rc := c.nextProbeTarget(); rc != nil {
		err = c.probeResource(ctx, rc)
	} else {
		// Nothing synced yet: the apiserver's answer to /version tells whether it is
		// reachable and accepts the credentials.
		err = c.readVersion(ctx)
	}
	if err == nil && c.opts.Clock.Since(c.versionRead()) > scaled(versionInterval, c.opts.Budget.Scale()) {
		err = c.readVersion(ctx)
	}
	if err != nil && ctx.Err() == nil {
		// Reported at once; then every proof is void, and the failure diagnosed.
		c.setProbe(err)
		c.disrupt()
		err = c.diagnose(ctx, err)
	}
	if ctx.Err() != nil {
		return
	}
	c.setProbe(err)
	// Also how a cluster past its initial sync timeout gets reported as such.
	c.rederive()
	c.reportProgress()
}

// nextProbeTarget returns the next synced resource to probe, or nil: the resource probed
// longest ago among those that changed since their last probe (their bound is the one
// that moves; an idle resource is proven by its watch's closing bookmark each idle proof
// interval); else the one whose watch ends soonest, within a probe interval, and that
// was not probed in the last one (its closing bookmark then proves it, and its own
// pre-bookmark probe is skipped: one request does both jobs); else the one probed
// longest ago.
func (c *Cluster) nextProbeTarget() *resourceCache {
	c.mu.Lock()
	defer c.mu.Unlock()
	var synced []*resourceCache
	for _, rc := range c.resources {
		if rc.lister != nil && rc.isSynced() {
			synced = append(synced, rc)
		}
	}
	if len(synced) == 0 {
		return nil
	}
	// Map order is random; sorted, ties go the same way every time.
	sort.Slice(synced, func(i, j int) bool {
		a, b := synced[i], synced[j]
		return a.display < b.display || a.display == b.display && a.namespace < b.namespace
	})
	now, interval := c.opts.Clock.Now(), c.probeInterval()
	var soonest, changed, oldest *resourceCache
	var soonestEnd, changedProbe, oldestProbe time.Time
	for _, rc := range synced {
		rc.mu.Lock()
		st, probed, dirty := rc.stream, rc.lastProbe, rc.changes != rc.changesAtProbe
		var end time.Time
		if st != nil && !st.ended && !st.initial {
			end = st.deadline
		}
		rc.mu.Unlock()
		if oldest == nil || probed.Before(oldestProbe) {
			oldest, oldestProbe = rc, probed
		}
		if dirty && (changed == nil || probed.Before(changedProbe)) {
			changed, changedProbe = rc, probed
		}
		if end.IsZero() || end.Sub(now) < preBookmarkLead || end.Sub(now) > interval+preBookmarkLead || now.Sub(probed) < interval {
			continue
		}
		if soonest == nil || end.Before(soonestEnd) {
			soonest, soonestEnd = rc, end
		}
	}
	switch {
	case changed != nil:
		return changed
	case soonest != nil:
		return soonest
	}
	return oldest
}

// probedRecently reports whether rc was probed since its last disruption and within the
// last probe interval: its watch's next bookmark proves it without another probe.
func (rc *resourceCache) probedRecently(now time.Time) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.lastProbe.After(rc.proof.disruptedAt) && now.Sub(rc.lastProbe) < rc.cluster.probeInterval()
}

func (rc *resourceCache) isSynced() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.facts.synced && !rc.facts.stopped
}

// probeResource lists one object of rc with a consistent read and records the answer's
// revision for rc alone (see the top of this file).
func (c *Cluster) probeResource(ctx context.Context, rc *resourceCache) error {
	pctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	sent := c.opts.Clock.Now()
	c.probes.Add(1)
	rc.mu.Lock()
	rc.lastProbe, rc.changesAtProbe = sent, rc.changes
	rc.mu.Unlock()
	obj, err := rc.lister.ListWithContext(pctx, metav1.ListOptions{Limit: 1, ResourceVersion: ""})
	if err != nil {
		return err
	}
	l, err := meta.ListAccessor(obj)
	if err != nil {
		return err
	}
	rv := ParseResourceVersion(l.GetResourceVersion())
	if rv == 0 {
		return nil // not an etcd revision: nothing to compare
	}
	now := c.opts.Clock.Now()
	rc.mu.Lock()
	rc.proof.probed(sent, rv, now)
	cacheRV := rc.proof.cacheRV
	rc.mu.Unlock()
	if ce := c.log.Check(zap.DebugLevel, "probe answered"); ce != nil {
		ce.Write(zap.String("resource", rc.display), zap.Uint64("revision", rv), zap.Uint64("cacheRevision", cacheRV), zap.Duration("took", now.Sub(sent)))
	}
	return nil
}

// readVersion asks the apiserver for /version.
func (c *Cluster) readVersion(ctx context.Context) error {
	body, err := c.get(ctx, "/version")
	if err != nil {
		return err
	}
	var info struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.Unmarshal(body, &info); err == nil {
		c.mu.Lock()
		c.version, c.versionAt = info.GitVersion, c.opts.Clock.Now()
		c.mu.Unlock()
	}
	return nil
}

func (c *Cluster) versionRead() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.versionAt
}

// get reads path from the apiserver on the cluster's connection, bounded by the request
// timeout. Errors carry the status as an apierrors.StatusError.
func (c *Cluster) get(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.target.Config.Host, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	c.probes.Add(1)
	resp, err := c.conn.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, apierrors.NewGenericServerResponse(resp.StatusCode, "GET", schema.GroupResource{}, "", strings.TrimSpace(string(body)), 0, false)
	}
	return body, nil
}

// disrupt voids every resource's proof: only probes sent from now on count.
func (c *Cluster) disrupt() {
	now := c.opts.Clock.Now()
	for _, rc := range c.informers() {
		rc.mu.Lock()
		rc.proof.disrupted(now)
		rc.mu.Unlock()
	}
}

// diagnose explains a failed probe. A timeout closes the cluster's connections (a connection that stopped delivering hangs
// every request and watch on it); then /readyz?verbose, on a new connection, tells an
// apiserver that lost its etcd (it still answers, and keeps idle watches open) and a
// stalled connection (it answers at once) from one that does not answer at all.
func (c *Cluster) diagnose(ctx context.Context, err error) error {
	if phase, _ := classify(err); phase == PhaseUnauthorized || phase == PhaseForbidden {
		return err
	}
	timedOut := errors.Is(err, context.DeadlineExceeded) || utilnet.IsTimeout(err)
	if timedOut {
		c.dialer.CloseAll()
		c.connResets.Add(1)
		c.log.Warn("probe timed out; closed the cluster's connections so that its watches reconnect", zap.Error(err))
	}
	body, rerr := c.get(ctx, "/readyz?verbose")
	switch {
	case bytes.Contains(body, []byte("[-]etcd ")):
		return errStorageUnavailable
	case rerr == nil && timedOut:
		return errConnectionStalled
	}
	return err
}

// informers returns the resources that run an informer.
func (c *Cluster) informers() []*resourceCache {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*resourceCache, 0, len(c.resources))
	for _, rc := range c.resources {
		if rc.informer != nil {
			out = append(out, rc)
		}
	}
	return out
}

// rederive recomputes every resource's phase, then the cluster's.
func (c *Cluster) rederive() {
	for _, rc := range c.informers() {
		rc.update(func(*resourceFacts) {})
	}
	c.resourceChanged()
}
