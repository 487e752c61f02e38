package sharding

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
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
// the caller's own credentials go with each replica-to-replica request, so a replica never
// shows a caller more than the caller may see. A request with local=true is answered from
// this replica's own caches only (that is what the replicas ask each other).
type Router struct {
	Source *Source
	// Client makes the replica-to-replica requests. Default: a client with Timeout.
	Client *http.Client
	// Timeout bounds one replica's part of an answer; its clusters are reported partial
	// past it. Default 30s.
	Timeout time.Duration
	// Scope is the caller's scope (nil: sees everything).
	Scope func(*http.Request) aggregator.Scope
	// DefaultLimit is a list page's size when the request gives none, as the local API's.
	DefaultLimit int
	Logger       *zap.Logger

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
		rt.Client = &http.Client{Timeout: rt.Timeout}
	}
	if rt.Logger == nil {
		rt.Logger = zap.NewNop()
	}
	if rt.DefaultLimit == 0 {
		rt.DefaultLimit = 500
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Method != http.MethodGet || q.Get("local") == "true" || r.Header.Get(routedHeader) != "" {
			next.ServeHTTP(w, r)
			return
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/clusters/"):
			rt.cluster(w, r, next)
		case strings.HasPrefix(r.URL.Path, "/fleet/") || r.URL.Path == "/fleet":
			rt.fleetWarning(w, r, next)
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

// routedHeader marks a request one replica passed to another: it is answered there,
// never passed on again (two replicas briefly disagreeing on an owner cannot loop).
const routedHeader = "X-Fleetcache-Routed"

// cluster passes a Kubernetes API request for one cluster (/clusters/<name>/...) to a
// replica that caches it, streams (watches) included, with the caller's credentials.
func (rt *Router) cluster(w http.ResponseWriter, r *http.Request, local http.Handler) {
	name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/clusters/"), "/")
	r2 := cloneRequest(r, r.URL.Path, func(v url.Values) { v.Set("cluster", name) })
	cands, _ := rt.candidates(r2)
	owners := cands[name]
	if len(owners) == 0 || owners[0].Identity == rt.Source.Owner.Identity() {
		local.ServeHTTP(w, r) // this replica's, or unknown here: the local answer says so
		return
	}
	target, err := url.Parse(owners[0].Address)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "ReplicaUnavailable", fmt.Sprintf("cluster %s is cached by replica %s at %q: %v", name, owners[0].Identity, owners[0].Address, err))
		return
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(routedHeader, rt.Source.Owner.Identity())
		},
		FlushInterval: -1, // watches: every event at once
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", fmt.Sprintf("cluster %s is cached by replica %s, which did not answer: %v", name, owners[0].Identity, err))
		},
	}
	proxy.ServeHTTP(w, r)
}

// fleetWarning answers /fleet from this replica's clusters, and says so: kubectl prints
// the Warning, so nothing is missing silently.
func (rt *Router) fleetWarning(w http.ResponseWriter, r *http.Request, local http.Handler) {
	cands, orphans := rt.candidates(r)
	self := rt.Source.Owner.Identity()
	var elsewhere []string
	for c, owners := range cands {
		if owners[0].Identity != self {
			elsewhere = append(elsewhere, c)
		}
	}
	elsewhere = append(elsewhere, orphans...)
	if len(elsewhere) > 0 {
		sort.Strings(elsewhere)
		shown := elsewhere
		if len(shown) > 10 {
			shown = append(shown[:10:10], fmt.Sprintf("and %d more", len(elsewhere)-10))
		}
		w.Header().Add("Warning", fmt.Sprintf(`299 - "fleetcache: partial answer: replica %s caches %d of the %d clusters; %s are cached by other replicas: ask them through /clusters/<name> or /api/v1"`,
			self, len(cands)+len(orphans)-len(elsewhere), len(cands)+len(orphans), strings.Join(shown, ", ")))
	}
	local.ServeHTTP(w, r)
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
	if rd.self {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, pathQuery, nil)
		if err != nil {
			p.err = err
			return p
		}
		req.Header = r.Header.Clone()
		rec := &recorder{header: http.Header{}, status: http.StatusOK}
		local.ServeHTTP(rec, req)
		p.status, p.body = rec.status, rec.buf.Bytes()
		return p
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(rd.member.Address, "/")+pathQuery, nil)
	if err != nil {
		p.err = err
		return p
	}
	// The caller's credentials, not this replica's: the peer checks them itself.
	if a := r.Header.Get("Authorization"); a != "" {
		req.Header.Set("Authorization", a)
	}
	resp, err := rt.Client.Do(req)
	if err != nil {
		p.err = err
		return p
	}
	defer resp.Body.Close()
	p.status = resp.StatusCode
	p.body, p.err = io.ReadAll(resp.Body)
	return p
}

// recorder is a ResponseWriter into memory, for this replica's own part.
type recorder struct {
	header http.Header
	status int
	buf    bytes.Buffer
}

func (w *recorder) Header() http.Header         { return w.header }
func (w *recorder) WriteHeader(code int)        { w.status = code }
func (w *recorder) Write(b []byte) (int, error) { return w.buf.Write(b) }

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

// element is one item or row of a merged page.
type element struct {
	raw     []byte
	cluster string
}

// position is where a routed list resumes: after this cluster/namespace/name, for the
// query with this hash.
type position struct {
	Query  string `json:"q"`
	After  string `json:"a"`
	Issued int64  `json:"t"`
}

func queryHash(r *http.Request) string {
	q := r.URL.Query()
	q.Del("continue")
	q.Del("limit")
	q.Del("pretty")
	h := sha256.Sum256([]byte(q.Encode()))
	return hex.EncodeToString(h[:8])
}

// linesHead is the first line of a reader's list answer in framing=lines.
type linesHead struct {
	Resource          json.RawMessage `json:"resource"`
	ColumnDefinitions json.RawMessage `json:"columnDefinitions"`
}

// linesPage is a reader's list answer in framing=lines.
type linesPage struct {
	head     linesHead
	elems    []element
	cont     string
	complete bool
}

func parseLines(body []byte, rows bool) (linesPage, error) {
	var p linesPage
	first := true
	for len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		if i < 0 {
			i = len(body)
		}
		line := body[:i]
		body = body[min(i+1, len(body)):]
		if first {
			first = false
			if err := json.Unmarshal(line, &p.head); err != nil {
				return p, fmt.Errorf("answer head: %w", err)
			}
			continue
		}
		if bytes.HasPrefix(line, []byte(`{"continue":`)) && len(body) == 0 {
			var t struct {
				Continue string `json:"continue"`
			}
			if err := json.Unmarshal(line, &t); err != nil {
				return p, fmt.Errorf("answer tail: %w", err)
			}
			p.cont, p.complete = t.Continue, true
			break
		}
		p.elems = append(p.elems, element{raw: line, cluster: clusterOf(line, rows)})
	}
	if !p.complete {
		return p, fmt.Errorf("answer cut short")
	}
	return p, nil
}

// list answers /api/v1/objects for the fleet, one page at a time. Each page first asks
// every reader for its clusters' counts (cheap: counters and indexes) and freshness, then
// asks only the readers of the clusters the page spans, from the position it resumes at:
// no reader sends more than a page, and most pages come from one.
func (rt *Router) list(w http.ResponseWriter, r *http.Request, local http.Handler) {
	if cands, orphans := rt.candidates(r); len(cands) == 0 && len(orphans) == 0 {
		local.ServeHTTP(w, r) // nothing selected: the local answer says why (unknown cluster, ...)
		return
	}
	q := r.URL.Query()
	limit := rt.DefaultLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			local.ServeHTTP(w, r) // the local API words the error
			return
		}
		limit = n
	}
	rows := q.Get("format") == "table"
	qh := queryHash(r)
	after := ""
	if tok := q.Get("continue"); tok != "" {
		raw, err := aggregator.VerifyToken(tok)
		var pos position
		if err == nil {
			err = json.Unmarshal(raw, &pos)
		}
		if err == nil && pos.Query != qh {
			err = fmt.Errorf("%w: the continue token was issued for a different query", aggregator.ErrInvalidToken)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "BadRequest", "continue token: "+err.Error())
			return
		}
		after = pos.After
	}

	// Round 1: counts and freshness of every selected cluster, from its reader.
	countQ := cloneRequest(r, "/api/v1/count", func(v url.Values) {
		for _, k := range []string{"limit", "continue", "format", "pretty"} {
			v.Del(k)
		}
		v.Set("groupBy", "cluster")
	})
	parts, orphans := rt.gather(countQ, local, nil)
	if p := clientError(parts); p != nil {
		writeRaw(w, p.status, p.body)
		return
	}
	counts, fresh, partial, resource, placed := rt.mergeCounts(parts, orphans)

	// Round 2: the clusters this page spans, from the position it resumes at.
	afterCluster, _, _ := strings.Cut(after, "/")
	var span []string
	sum := 0
	for _, c := range placed.order {
		if c < afterCluster {
			continue
		}
		span = append(span, c)
		if c == afterCluster {
			continue // partly sent already; what is left of it is unknown, so count on the next clusters
		}
		if sum += counts[c]; sum >= limit {
			break
		}
	}
	byReader := map[string]*reader{}
	var readers []*reader
	for _, c := range span {
		rd := placed.by[c]
		if byReader[rd.member.Identity] == nil {
			cp := &reader{member: rd.member, self: rd.self}
			byReader[rd.member.Identity] = cp
			readers = append(readers, cp)
		}
		byReader[rd.member.Identity].clusters = append(byReader[rd.member.Identity].clusters, c)
	}
	extra := url.Values{"limit": {strconv.Itoa(limit)}, "framing": {"lines"}}
	if after != "" {
		extra.Set("after", after)
	}
	if len(readers) == 1 {
		// Most pages come from one replica: stream its items through as they arrive.
		rt.streamPage(w, r, local, readers[0], extra, rows, qh, fresh, partial, resource, span, placed)
		return
	}
	pages := rt.ask(r, readers, local, extra)
	var elems []element
	var head *linesHead
	bound := "" // the smallest position (cluster/namespace/name) a truncated reader stopped at
	for i := range pages {
		p := &pages[i]
		var pg linesPage
		if !p.failed() && p.status == http.StatusOK {
			pg, p.err = parseLines(p.body, rows)
		}
		if p.failed() || p.status != http.StatusOK {
			rt.Logger.Warn("replica did not answer its part of a page", zap.String("replica", p.rd.member.Identity), zap.Int("status", p.status), zap.Error(p.err))
			writeError(w, http.StatusServiceUnavailable, "ReplicaUnavailable",
				fmt.Sprintf("replica %s did not send its part of the page (HTTP %d, %v); try again", p.rd.member.Identity, p.status, p.err))
			return
		}
		if head == nil {
			head = &pg.head
		}
		elems = append(elems, pg.elems...)
		if pg.cont != "" && len(pg.elems) > 0 {
			if at := positionOf(pg.elems[len(pg.elems)-1].raw, rows); bound == "" || before(at, bound) {
				bound = at
			}
		}
	}
	// Each cluster comes from one reader, whose items are in order: ordering by cluster
	// (stably) orders the page.
	sort.SliceStable(elems, func(i, j int) bool { return elems[i].cluster < elems[j].cluster })
	if bound != "" {
		bc, _, _ := strings.Cut(bound, "/")
		n := sort.Search(len(elems), func(i int) bool { return elems[i].cluster > bc })
		elems = elems[:n]
	}
	cont := ""
	switch {
	case len(elems) > limit:
		elems = elems[:limit]
		cont = positionOf(elems[limit-1].raw, rows)
	case bound != "":
		cont = bound
	case len(span) > 0 && span[len(span)-1] != placed.last():
		// The page ended with its span; clusters after it remain.
		if len(elems) > 0 {
			cont = positionOf(elems[len(elems)-1].raw, rows)
		} else {
			cont = span[len(span)-1] + "/\uffff/" // past every namespace/name of the span's last cluster
		}
	}
	var token string
	if cont != "" {
		raw, _ := json.Marshal(position{Query: qh, After: cont, Issued: time.Now().Unix()})
		token = aggregator.SignToken(raw)
	}
	if head == nil {
		head = &linesHead{Resource: resource}
	}
	writeList(w, head, rows, fresh, partial, elems, token)
}

// streamPage sends a page that one reader answers, passing its items through as they
// come instead of holding the page.
func (rt *Router) streamPage(w http.ResponseWriter, r *http.Request, local http.Handler, rd *reader, extra url.Values,
	rows bool, qh string, fresh []aggregator.Freshness, partial bool, resource json.RawMessage, span []string, placed placement) {
	q := r.URL.Query()
	q.Del("continue")
	for k, v := range extra {
		q[k] = v
	}
	q.Set("local", "true")
	q.Set("only", strings.Join(rd.clusters, ","))
	body, status, err := rt.open(r, rd, local, r.URL.Path+"?"+q.Encode())
	if err != nil || status != http.StatusOK {
		if body != nil {
			body.Close()
		}
		writeError(w, http.StatusServiceUnavailable, "ReplicaUnavailable",
			fmt.Sprintf("replica %s did not send its part of the page (HTTP %d, %v); try again", rd.member.Identity, status, err))
		return
	}
	defer body.Close()
	br := bufio.NewReaderSize(body, 256<<10)
	headLine, err := br.ReadSlice('\n')
	var head linesHead
	if err == nil {
		err = json.Unmarshal(headLine, &head)
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "ReplicaUnavailable", fmt.Sprintf("replica %s: unreadable answer: %v", rd.member.Identity, err))
		return
	}
	if len(head.Resource) == 0 {
		head.Resource = resource
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	w.Header().Set("Content-Type", "application/json")
	writeListHead(bw, &head, rows, fresh, partial)
	var last []byte
	n := 0
	readerCont, complete := "", false
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			break // cut short: the client sees a cut answer, as from a failing local list
		}
		line = line[:len(line)-1]
		if bytes.HasPrefix(line, []byte(`{"continue":`)) { // the tail: items start with {"cluster": or {"cells":
			var t struct {
				Continue string `json:"continue"`
			}
			complete = json.Unmarshal(line, &t) == nil
			readerCont = t.Continue
			break
		}
		if n > 0 {
			_ = bw.WriteByte(',')
		}
		_, _ = bw.Write(line)
		last, n = line, n+1
	}
	if !complete {
		_ = bw.Flush()
		return
	}
	cont := ""
	switch {
	case readerCont != "" && last != nil:
		cont = positionOf(last, rows)
	case len(span) > 0 && span[len(span)-1] != placed.last():
		if last != nil {
			cont = positionOf(last, rows)
		} else {
			cont = span[len(span)-1] + "/\uffff/"
		}
	}
	token := ""
	if cont != "" {
		raw, _ := json.Marshal(position{Query: qh, After: cont, Issued: time.Now().Unix()})
		token = aggregator.SignToken(raw)
	}
	writeListTail(bw, rows, token)
	_ = bw.Flush()
}

// open starts a reader's answer: this replica's through a pipe, a peer's over HTTP.
func (rt *Router) open(r *http.Request, rd *reader, local http.Handler, pathQuery string) (io.ReadCloser, int, error) {
	if rd.self {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, pathQuery, nil)
		if err != nil {
			return nil, 0, err
		}
		req.Header = r.Header.Clone()
		pr, pw := io.Pipe()
		pwr := &pipeWriter{header: http.Header{}, pw: pw, status: make(chan int, 1)}
		go func() {
			local.ServeHTTP(pwr, req)
			pwr.WriteHeader(http.StatusOK) // if it wrote nothing
			pw.Close()
		}()
		return pr, <-pwr.status, nil
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, strings.TrimSuffix(rd.member.Address, "/")+pathQuery, nil)
	if err != nil {
		return nil, 0, err
	}
	if a := r.Header.Get("Authorization"); a != "" {
		req.Header.Set("Authorization", a)
	}
	client := *rt.Client
	client.Timeout = 0 // bounded by the request's context; a page may be long
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.StatusCode, nil
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

// placement is where each cluster of a page's plan is read.
type placement struct {
	order []string // clusters with a reader, sorted
	by    map[string]*reader
}

func (p placement) last() string {
	if len(p.order) == 0 {
		return ""
	}
	return p.order[len(p.order)-1]
}

// mergeCounts merges the count answers grouped by cluster: each cluster's count, the
// freshness of every selected cluster, and which reader answered for which cluster.
func (rt *Router) mergeCounts(parts []part, orphans []string) (counts map[string]int, fresh []aggregator.Freshness, partial bool, resource json.RawMessage, placed placement) {
	counts = map[string]int{}
	placed.by = map[string]*reader{}
	blocks := make([][]aggregator.Freshness, len(parts))
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
		if resource == nil {
			resource = a.Resource
		}
		blocks[i] = a.Clusters
		for _, g := range a.Groups {
			if len(g.Values) > 0 {
				counts[g.Values[0]] = g.Count
			}
		}
		for _, c := range p.rd.clusters {
			placed.by[c] = p.rd
			placed.order = append(placed.order, c)
		}
	}
	sort.Strings(placed.order)
	fresh, partial = freshness(parts, blocks, orphans)
	return counts, fresh, partial, resource, placed
}

// cloneRequest is r for another path of the API, its query edited.
func cloneRequest(r *http.Request, path string, edit func(url.Values)) *http.Request {
	r2 := r.Clone(r.Context())
	u := *r.URL
	u.Path = path
	q := u.Query()
	edit(q)
	u.RawQuery = q.Encode()
	r2.URL = &u
	return r2
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeList(w http.ResponseWriter, head *linesHead, rows bool, fresh []aggregator.Freshness, partial bool, elems []element, token string) {
	bw := bufio.NewWriterSize(w, 64<<10)
	w.Header().Set("Content-Type", "application/json")
	writeListHead(bw, head, rows, fresh, partial)
	for i, e := range elems {
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		_, _ = bw.Write(e.raw)
	}
	writeListTail(bw, rows, token)
	_ = bw.Flush()
}

// writeListHead writes an ObjectList up to its first item, as the local API does.
func writeListHead(b *bufio.Writer, head *linesHead, rows bool, fresh []aggregator.Freshness, partial bool) {
	_, _ = b.WriteString(`{"kind":"ObjectList","resource":`)
	if len(head.Resource) > 0 {
		_, _ = b.Write(head.Resource)
	} else {
		_, _ = b.WriteString("null")
	}
	fj, _ := json.Marshal(fresh)
	if fresh == nil {
		fj = []byte("[]")
	}
	_, _ = b.WriteString(`,"clusters":`)
	_, _ = b.Write(fj)
	_, _ = b.WriteString(`,"partial":` + strconv.FormatBool(partial))
	if rows {
		_, _ = b.WriteString(`,"table":{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":`)
		if len(head.ColumnDefinitions) > 0 {
			_, _ = b.Write(head.ColumnDefinitions)
		} else {
			_, _ = b.WriteString("[]")
		}
		_, _ = b.WriteString(`,"rows":[`)
	} else {
		_, _ = b.WriteString(`,"items":[`)
	}
}

func writeListTail(b *bufio.Writer, rows bool, token string) {
	_ = b.WriteByte(']')
	if rows {
		_ = b.WriteByte('}')
	}
	if token != "" {
		_, _ = b.WriteString(`,"continue":` + strconv.Quote(token))
	}
	_, _ = b.WriteString("}\n")
}

// before orders two positions by cluster, then namespace/name ("a/x" sorts before
// "a-b/x", which plain string order would not say).
func before(a, b string) bool {
	ac, ak, _ := strings.Cut(a, "/")
	bc, bk, _ := strings.Cut(b, "/")
	if ac != bc {
		return ac < bc
	}
	return ak < bk
}

// clusterOf reads an item's cluster ({"cluster":...}) or a table row's (its first cell).
func clusterOf(raw json.RawMessage, row bool) string {
	if row {
		var v struct {
			Cells []json.RawMessage `json:"cells"`
		}
		// Rows are small (cells and a name): decoding them whole is cheap.
		if json.Unmarshal(raw, &v) == nil && len(v.Cells) > 0 {
			var s string
			_ = json.Unmarshal(v.Cells[0], &s)
			return s
		}
		return ""
	}
	// Items begin with their cluster; avoid scanning the whole object for it.
	const prefix = `{"cluster":"`
	if bytes.HasPrefix(raw, []byte(prefix)) {
		if end := bytes.IndexByte(raw[len(prefix):], '"'); end >= 0 && bytes.IndexByte(raw[len(prefix):len(prefix)+end], '\\') < 0 {
			return string(raw[len(prefix) : len(prefix)+end])
		}
	}
	var v struct {
		Cluster string `json:"cluster"`
	}
	_ = json.Unmarshal(raw, &v)
	return v.Cluster
}

// positionOf is an item's or row's cluster/namespace/name.
func positionOf(raw json.RawMessage, row bool) string {
	var meta struct {
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	var v struct {
		Cluster string          `json:"cluster"`
		Object  json.RawMessage `json:"object"`
	}
	_ = json.Unmarshal(raw, &v)
	_ = json.Unmarshal(v.Object, &meta)
	c := v.Cluster
	if row {
		c = clusterOf(raw, true)
	}
	return c + "/" + meta.Metadata.Namespace + "/" + meta.Metadata.Name
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
