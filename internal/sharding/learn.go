package sharding

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fleetcache/fleetcache/aggregator"
)

// A replica knows a resource once one of its own clusters serves it. A custom resource
// that only other replicas' clusters serve would be missing from its discovery, and
// kubectl through it would answer "the server doesn't have a resource type", while the
// same command through another replica lists the objects. So the router learns the
// resources its peers cache (their /api/v1/resources) and adds those it does not know to
// the index: discovery then names them, and the router's fan-out brings their objects.

// learnEvery is how often a replica asks its peers again (a CRD installed in one
// cluster reaches every replica's discovery within it).
const learnEvery = 10 * time.Second

// learnTimeout bounds one round of asking the peers.
const learnTimeout = 2 * time.Second

type learner struct {
	mu       sync.Mutex
	last     time.Time     // when the last round ended
	running  chan struct{} // closed when the running round ends; nil when none runs
	finished bool          // a round has ended
}

// namesResources reports whether a request's path names or lists resources: the
// Kubernetes API's (discovery included) and /api/v1's.
func namesResources(path string) bool {
	return path == "/fleet" || strings.HasPrefix(path, "/fleet/") || strings.HasPrefix(path, "/clusters/") || strings.HasPrefix(path, "/api/v1/")
}

// learnResources starts a round of asking the peers when the last one is older than
// learnEvery, on behalf of the caller (its signed identity; the peers check it). The
// first request waits for the first round, so that it already sees what the peers know;
// later ones never wait.
func (rt *Router) learnResources(r *http.Request) {
	if rt.Learn == nil {
		return
	}
	l := &rt.learner
	l.mu.Lock()
	if l.running == nil && time.Since(l.last) >= learnEvery {
		l.running = make(chan struct{})
		// The round outlives the request: it keeps the caller (its context carries the
		// authenticated user), not the request's deadline.
		go rt.learnRound(r.WithContext(context.WithoutCancel(r.Context())), l.running)
	}
	wait := !l.finished
	running := l.running
	l.mu.Unlock()
	if wait && running != nil {
		select {
		case <-running:
		case <-r.Context().Done():
		}
	}
}

func (rt *Router) learnRound(caller *http.Request, done chan struct{}) {
	defer func() {
		l := &rt.learner
		l.mu.Lock()
		l.last, l.running, l.finished = time.Now(), nil, true
		l.mu.Unlock()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), learnTimeout)
	defer cancel()
	self := rt.Source.Owner.Identity()
	var wg sync.WaitGroup
	for _, m := range rt.Source.Owner.Members() {
		if m.Identity == self {
			continue
		}
		wg.Go(func() {
			infos, err := rt.peerResources(ctx, m, caller)
			if err != nil {
				rt.Logger.Debug("cannot learn a replica's resources", zap.String("replica", m.Identity), zap.Error(err))
				return
			}
			for _, info := range infos {
				if rt.Learn(info) {
					rt.Logger.Info("learnt a resource from another replica", zap.String("resource", info.Name), zap.String("replica", m.Identity))
				}
			}
		})
	}
	wg.Wait()
}

func (rt *Router) peerResources(ctx context.Context, m Member, caller *http.Request) ([]aggregator.ResourceInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(m.Address, "/")+"/api/v1/resources", nil)
	if err != nil {
		return nil, err
	}
	rt.authorize(req, caller, m)
	req.Header.Set(routedHeader, "1")
	resp, err := rt.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/resources: %s", resp.Status)
	}
	var body struct {
		Resources []aggregator.ResourceInfo `json:"resources"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	return body.Resources, nil
}
