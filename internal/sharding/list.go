package sharding

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fleetcache/fleetcache/aggregator"
)

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
	answers := decodeCounts(parts)
	blocks := make([][]aggregator.Freshness, len(parts))
	for i, a := range answers {
		if a == nil {
			continue
		}
		p := &parts[i]
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
