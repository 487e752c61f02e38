package sharding

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/glob"
)

// Router answers the /api/v1 lists, counts and single gets for the whole fleet on any
// replica: it asks each cluster's reader (this replica when it owns the cluster, else the
// cluster's first live owner) for its part, in parallel, and merges the answers. It sits
// behind authentication: the caller's scope decides which clusters are asked for, and
// each replica-to-replica request carries the caller's identity and scope, signed with the
// group key (peer.go), so a replica never shows a caller more than the caller may see. The
// caller's credentials never leave this replica, and only members that proved the group
// key are asked. A request with local=true is answered from this replica's own caches
// only (that is what the replicas ask each other).
type Router struct {
	Source *Source
	// Client makes the replica-to-replica requests; each is bounded by its context. Default:
	// PeerClient's, trusting the system's roots.
	Client *http.Client
	// Timeout bounds one replica's part of an answer; its clusters are reported partial
	// past it. Default 30s.
	Timeout time.Duration
	// Scope is the caller's scope (nil: sees everything).
	Scope func(*http.Request) aggregator.Scope
	// DefaultLimit is a list page's size when the request gives none, as the local API's.
	DefaultLimit int
	// MaxResponseBytes cuts a merged Kubernetes list (/fleet) with a continue token, as
	// the local API cuts its own (request.Options). Default 32 MiB.
	MaxResponseBytes int
	// Learn adds a resource another replica caches and this one does not know
	// (aggregator.Index.Learn), reporting whether it was new; nil learns nothing.
	Learn  func(aggregator.ResourceInfo) bool
	Logger *zap.Logger

	learner learner

	endOnce sync.Once
	end     context.Context
	endFunc context.CancelFunc
}

func (rt *Router) streams() context.Context {
	rt.endOnce.Do(func() { rt.end, rt.endFunc = context.WithCancel(context.Background()) })
	return rt.end
}

// EndStreams ends every routed watch (on shutdown, as the local API ends its own).
func (rt *Router) EndStreams() {
	rt.streams()
	rt.endFunc()
}

// Wrap returns next with the fleet-wide routes answered by the router.
func (rt *Router) Wrap(next http.Handler) http.Handler {
	if rt.Timeout == 0 {
		rt.Timeout = 30 * time.Second
	}
	if rt.Client == nil {
		rt.Client = PeerClient(nil)
	}
	if rt.Logger == nil {
		rt.Logger = zap.NewNop()
	}
	if rt.DefaultLimit == 0 {
		rt.DefaultLimit = 500
	}
	if rt.MaxResponseBytes == 0 {
		rt.MaxResponseBytes = 32 << 20
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Method != http.MethodGet || q.Get("local") == "true" || r.Header.Get(routedHeader) != "" {
			next.ServeHTTP(w, r)
			return
		}
		if namesResources(r.URL.Path) {
			rt.learnResources(r)
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/clusters/"):
			rt.cluster(w, r, next)
		case strings.HasPrefix(r.URL.Path, "/fleet/") || r.URL.Path == "/fleet":
			rt.fleet(w, r, next)
		case r.URL.Path == "/api/v1/objects":
			rt.list(w, r, next)
		case r.URL.Path == "/api/v1/count":
			rt.count(w, r, next)
		case strings.HasPrefix(r.URL.Path, "/api/v1/objects/"):
			rt.get(w, r, next)
		case r.URL.Path == "/api/v1/watch":
			rt.watch(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// reader is one replica asked for its part of an answer.
type reader struct {
	member   Member
	self     bool
	clusters []string // sorted
}

// candidates maps every cluster the request selects to the replicas that can answer for
// it, in the order to ask them: this replica first when it owns the cluster (no hop),
// then the owners by weight. Clusters no live replica owns are returned apart.
func (rt *Router) candidates(r *http.Request) (map[string][]Member, []string) {
	pattern := r.URL.Query().Get("cluster")
	var scope aggregator.Scope
	if rt.Scope != nil {
		scope = rt.Scope(r)
	}
	members := rt.Source.Owner.Members()
	self := rt.Source.Owner.Identity()
	out := map[string][]Member{}
	var orphans []string
	for _, c := range rt.Source.All() {
		if pattern != "" && !glob.Match(pattern, c) {
			continue
		}
		if scope != nil && !scope.SeesCluster(c) {
			continue
		}
		owners := Owners(c, members, rt.Source.Owner.Replicas())
		if len(owners) == 0 {
			orphans = append(orphans, c)
			continue
		}
		for i, o := range owners {
			if o.Identity == self && i > 0 {
				owners[0], owners[i] = owners[i], owners[0]
			}
		}
		out[c] = owners
	}
	return out, orphans
}

// readers groups clusters by the first candidate not in failed; clusters without one
// are returned apart.
func (rt *Router) readers(cands map[string][]Member, only []string, failed map[string]bool) ([]*reader, []string) {
	self := rt.Source.Owner.Identity()
	byID := map[string]*reader{}
	var out []*reader
	var none []string
	sort.Strings(only)
	for _, c := range only {
		var pick *Member
		for _, m := range cands[c] {
			if !failed[m.Identity] {
				pick = &m
				break
			}
		}
		if pick == nil {
			none = append(none, c)
			continue
		}
		rd := byID[pick.Identity]
		if rd == nil {
			rd = &reader{member: *pick, self: pick.Identity == self}
			byID[pick.Identity] = rd
			out = append(out, rd)
		}
		rd.clusters = append(rd.clusters, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].member.Identity < out[j].member.Identity })
	return out, none
}

// part is one reader's answer.
type part struct {
	rd     *reader
	status int
	body   []byte
	err    error
}

// failed says the replica could not answer (unreachable, overloaded, broken); a 4xx is
// an answer about the request itself.
func (p part) failed() bool {
	return p.err != nil || p.status >= 500 || p.status == http.StatusTooManyRequests
}

// gather asks, for every selected cluster, one replica that caches it, in parallel; when
// a replica fails, its clusters are asked of their next owner (with sharding.replicas: 2
// a dead replica costs a retry, not a partial answer). It returns the answers, with a
// failed one for the clusters no owner answered for, and the clusters no replica owns.
func (rt *Router) gather(r *http.Request, local http.Handler, extra url.Values) ([]part, []string) {
	cands, orphans := rt.candidates(r)
	pending := make([]string, 0, len(cands))
	for c := range cands {
		pending = append(pending, c)
	}
	failed := map[string]bool{}
	lastFailure := map[string]part{}
	var done []part
	var exhausted []string
	for len(pending) > 0 {
		readers, none := rt.readers(cands, pending, failed)
		exhausted = append(exhausted, none...)
		pending = nil
		for _, p := range rt.ask(r, readers, local, extra) {
			if p.failed() {
				failed[p.rd.member.Identity] = true
				for _, c := range p.rd.clusters {
					lastFailure[c] = p
				}
				pending = append(pending, p.rd.clusters...)
				continue
			}
			done = append(done, p)
		}
	}
	// Report each cluster nobody answered for with the last failure it met.
	byFailure := map[string]*part{}
	for _, c := range exhausted {
		f := lastFailure[c]
		id := f.rd.member.Identity
		if byFailure[id] == nil {
			rd := *f.rd
			rd.clusters = nil
			f.rd = &rd
			byFailure[id] = &f
		}
		byFailure[id].rd.clusters = append(byFailure[id].rd.clusters, c)
	}
	for _, f := range byFailure {
		sort.Strings(f.rd.clusters)
		done = append(done, *f)
	}
	return done, orphans
}

// ask sends the request, narrowed to each reader's clusters, to every reader in parallel.
// This replica's part is served in-process by local.
func (rt *Router) ask(r *http.Request, readers []*reader, local http.Handler, extra url.Values) []part {
	parts := make([]part, len(readers))
	var wg sync.WaitGroup
	for i, rd := range readers {
		wg.Go(func() {
			q := r.URL.Query()
			q.Del("continue")
			for k, v := range extra {
				q[k] = v
			}
			q.Set("local", "true")
			q.Set("only", strings.Join(rd.clusters, ","))
			parts[i] = rt.fetch(r, rd, local, r.URL.Path+"?"+q.Encode())
		})
	}
	wg.Wait()
	return parts
}

func (rt *Router) fetch(r *http.Request, rd *reader, local http.Handler, pathQuery string) part {
	p := part{rd: rd}
	ctx, cancel := context.WithTimeout(r.Context(), rt.Timeout)
	defer cancel()
	body, status, err := rt.open(ctx, r, rd, local, pathQuery)
	if err != nil {
		p.err = err
		return p
	}
	defer body.Close()
	p.status = status
	p.body, p.err = io.ReadAll(body)
	return p
}

// open starts a reader's answer: this replica's through a pipe, a peer's over HTTP.
func (rt *Router) open(ctx context.Context, r *http.Request, rd *reader, local http.Handler, pathQuery string) (io.ReadCloser, int, error) {
	resp, err := rt.openResponse(ctx, r, rd, local, pathQuery, nil)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.StatusCode, nil
}

// openResponse is open with the answer's headers; header, when set, replaces the
// caller's Accept (what the router merges must be in a form it can merge).
func (rt *Router) openResponse(ctx context.Context, r *http.Request, rd *reader, local http.Handler, pathQuery string, header http.Header) (*http.Response, error) {
	if rd.self {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, pathQuery, nil)
		if err != nil {
			return nil, err
		}
		req.Header = r.Header.Clone()
		for k, v := range header {
			req.Header[k] = v
		}
		pr, pw := io.Pipe()
		pwr := &pipeWriter{header: http.Header{}, pw: pw, status: make(chan int, 1)}
		go func() {
			local.ServeHTTP(pwr, req)
			pwr.WriteHeader(http.StatusOK) // if it wrote nothing
			pw.Close()
		}()
		status := <-pwr.status
		return &http.Response{StatusCode: status, Header: pwr.header.Clone(), Body: pr}, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(rd.member.Address, "/")+pathQuery, nil)
	if err != nil {
		return nil, err
	}
	rt.authorize(req, r, rd.member)
	if a := r.Header.Get("Accept"); a != "" {
		req.Header.Set("Accept", a)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return rt.Client.Do(req)
}

// authorize makes req, to peer to on behalf of r's caller, carry the caller's signed
// identity (peer.go), never the caller's credentials.
func (rt *Router) authorize(req, r *http.Request, to Member) {
	setPeerHeaders(req, r, rt.Source.Owner.Key(), rt.Source.Owner.Identity(), to)
}

// pipeWriter is a ResponseWriter into a pipe: this replica's part, streamed.
type pipeWriter struct {
	header http.Header
	pw     *io.PipeWriter
	status chan int
	once   sync.Once
}

func (w *pipeWriter) Header() http.Header { return w.header }
func (w *pipeWriter) WriteHeader(code int) {
	w.once.Do(func() { w.status <- code })
}
func (w *pipeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(b)
}

// clientError returns the first part that failed because of the request itself (4xx):
// every replica would say the same, so the caller gets that answer.
func clientError(parts []part) *part {
	for i, p := range parts {
		if !p.failed() && p.status >= 400 {
			return &parts[i]
		}
	}
	return nil
}

// freshness merges the parts' per-cluster freshness: each cluster as its reader reported
// it, named after the reader; a cluster whose reader failed, or has not cached it yet, or
// that no replica owns, is reported not Synced, with the reason.
func freshness(parts []part, blocks [][]aggregator.Freshness, orphans []string) ([]aggregator.Freshness, bool) {
	var out []aggregator.Freshness
	partial := false
	for i, p := range parts {
		have := map[string]aggregator.Freshness{}
		for _, f := range blocks[i] {
			have[f.Cluster] = f
		}
		for _, c := range p.rd.clusters {
			f, ok := have[c]
			switch {
			case p.failed():
				msg := fmt.Sprintf("replica %s did not answer", p.rd.member.Identity)
				if p.err != nil {
					msg += ": " + p.err.Error()
				} else {
					msg += fmt.Sprintf(": HTTP %d", p.status)
				}
				f = aggregator.Freshness{Cluster: c, Phase: clusters.PhaseUnreachable, Reason: "ReplicaUnavailable", Message: msg}
			case !ok:
				f = aggregator.Freshness{Cluster: c, Phase: clusters.PhasePending, Reason: "NotCachedYet",
					Message: fmt.Sprintf("replica %s owns the cluster but has not cached it yet (ownership just moved)", p.rd.member.Identity)}
			}
			f.Replica = p.rd.member.Identity
			if f.Phase != clusters.PhaseSynced || (f.ResourcePhase != "" && f.ResourcePhase != clusters.PhaseSynced) {
				partial = true
			}
			out = append(out, f)
		}
	}
	for _, c := range orphans {
		out = append(out, aggregator.Freshness{Cluster: c, Phase: clusters.PhaseUnreachable, Reason: "NoReplica", Message: "no live replica owns this cluster"})
		partial = true
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out, partial
}

// decodeCounts decodes each part's count answer; nil where the replica failed or sent
// something unreadable (then marked failed).
func decodeCounts(parts []part) []*countAnswer {
	out := make([]*countAnswer, len(parts))
	for i := range parts {
		p := &parts[i]
		if p.failed() {
			continue
		}
		var a countAnswer
		if err := json.Unmarshal(p.body, &a); err != nil {
			p.err = fmt.Errorf("unreadable answer: %w", err)
			continue
		}
		out[i] = &a
	}
	return out
}

// countAnswer is a reader's /api/v1/count answer.
type countAnswer struct {
	Kind     string                 `json:"kind"`
	Resource json.RawMessage        `json:"resource"`
	GroupBy  []string               `json:"groupBy"`
	Groups   []aggregator.Group     `json:"groups"`
	Total    int                    `json:"total"`
	Clusters []aggregator.Freshness `json:"clusters"`
	Partial  bool                   `json:"partial"`
}

func (rt *Router) count(w http.ResponseWriter, r *http.Request, local http.Handler) {
	if cands, orphans := rt.candidates(r); len(cands) == 0 && len(orphans) == 0 {
		local.ServeHTTP(w, r)
		return
	}
	parts, orphans := rt.gather(r, local, nil)
	if p := clientError(parts); p != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(p.status)
		_, _ = w.Write(p.body)
		return
	}
	out := countAnswer{Kind: "Count", Groups: []aggregator.Group{}}
	blocks := make([][]aggregator.Freshness, len(parts))
	sums := map[string]*aggregator.Group{}
	for i, a := range decodeCounts(parts) {
		if a == nil {
			continue
		}
		blocks[i] = a.Clusters
		if out.Resource == nil {
			out.Resource, out.GroupBy = a.Resource, a.GroupBy
		}
		out.Total += a.Total
		for _, g := range a.Groups {
			k := strings.Join(g.Values, "\x00")
			if s := sums[k]; s != nil {
				s.Count += g.Count
			} else {
				sums[k] = &aggregator.Group{Values: g.Values, Count: g.Count}
			}
		}
	}
	for _, g := range sums {
		out.Groups = append(out.Groups, *g)
	}
	sort.Slice(out.Groups, func(i, j int) bool {
		return strings.Join(out.Groups[i].Values, "\x00") < strings.Join(out.Groups[j].Values, "\x00")
	})
	out.Clusters, out.Partial = freshness(parts, blocks, orphans)
	if out.Clusters == nil {
		out.Clusters = []aggregator.Freshness{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// get sends a single get to a replica that caches the cluster, the next owner if it
// fails.
func (rt *Router) get(w http.ResponseWriter, r *http.Request, local http.Handler) {
	rest := strings.TrimPrefix(r.URL.Path, "/api/v1/objects/")
	cluster, _, _ := strings.Cut(rest, "/")
	r2 := r.Clone(r.Context())
	q := r.URL.Query()
	q.Set("cluster", cluster)
	r2.URL.RawQuery = q.Encode()
	cands, _ := rt.candidates(r2)
	owners := cands[cluster]
	if len(owners) == 0 || owners[0].Identity == rt.Source.Owner.Identity() {
		local.ServeHTTP(w, r) // this replica's, or unknown: the local answer says so
		return
	}
	q = r.URL.Query()
	q.Set("local", "true")
	var p part
	for _, o := range owners {
		p = rt.fetch(r, &reader{member: o}, local, r.URL.Path+"?"+q.Encode())
		if !p.failed() {
			break
		}
	}
	if p.err != nil {
		writeError(w, http.StatusServiceUnavailable, "ReplicaUnavailable", fmt.Sprintf("cluster %s is cached by replica(s) that did not answer: %v", cluster, p.err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(p.status)
	_, _ = w.Write(p.body)
}

func writeError(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "reason": reason, "message": msg}) // as the local API's errors
}
