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
	"time"

	"github.com/fleetcache/fleetcache/aggregator"
)

// position is where a routed list (/api/v1 or a merged /fleet list) resumes: after this
// cluster/namespace/name, for the query with this hash.
type position struct {
	Query  string `json:"q"`
	After  string `json:"a"`
	Issued int64  `json:"t"`
}

// queryHash identifies a list for its continue token: the path and the parameters that
// select, not the page size, the position or the formatting.
func queryHash(r *http.Request) string {
	q := r.URL.Query()
	for _, k := range []string{"continue", "limit", "pretty", "resourceVersion", "resourceVersionMatch", "timeoutSeconds"} {
		q.Del(k)
	}
	h := sha256.Sum256([]byte(r.URL.Path + "?" + q.Encode()))
	return hex.EncodeToString(h[:8])
}

// linesHead is the first line of a reader's list answer in framing=lines.
type linesHead struct {
	Resource          json.RawMessage `json:"resource"`
	ColumnDefinitions json.RawMessage `json:"columnDefinitions"`
}

// run is a stretch of consecutive clusters (in the list's order) one reader answers for.
type run struct {
	rd       *reader
	clusters []string
}

// runs cuts clusters, in order, into runs of one reader each.
func runs(clusters []string, readerOf func(string) *reader) []run {
	var out []run
	for _, c := range clusters {
		rd := readerOf(c)
		if rd == nil {
			continue
		}
		if n := len(out); n > 0 && out[n-1].rd.member.Identity == rd.member.Identity {
			out[n-1].clusters = append(out[n-1].clusters, c)
			continue
		}
		out = append(out, run{rd: rd, clusters: []string{c}})
	}
	return out
}

// list answers /api/v1/objects for the fleet, one page at a time, in cluster, namespace
// and name order like the local API. The clusters from the page's position on are cut
// into runs that one reader answers for; the runs are read one after the other, each
// streamed through as it arrives, until the page is full. Every reader is also asked, at
// the same time as the first run, for its clusters' counts and freshness: the page's
// freshness covers every selected cluster, and runs of clusters with nothing selected
// are skipped without asking.
func (rt *Router) list(w http.ResponseWriter, r *http.Request, local http.Handler) {
	cands, orphans := rt.candidates(r)
	if len(cands) == 0 && len(orphans) == 0 {
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
	afterCluster, _, _ := strings.Cut(after, "/")
	var ahead []string // the selected clusters from the position on, in order
	for c := range cands {
		if c >= afterCluster {
			ahead = append(ahead, c)
		}
	}
	sort.Strings(ahead)

	// The first run, on its first candidate, while the counts come.
	self := rt.Source.Owner.Identity()
	firstRuns := runs(ahead, func(c string) *reader {
		m := cands[c][0]
		return &reader{member: m, self: m.Identity == self}
	})
	type stream struct {
		run    run
		body   io.ReadCloser
		status int
		err    error
	}
	openRun := func(rn run, max int) stream {
		extra := url.Values{"limit": {strconv.Itoa(max)}, "framing": {"lines"}, "only": {strings.Join(rn.clusters, ",")}}
		if after != "" && rn.clusters[0] == afterCluster {
			extra.Set("after", after)
		}
		body, status, err := rt.open(r.Context(), r, rn.rd, local, r.URL.Path+"?"+withParams(r, extra))
		return stream{run: rn, body: body, status: status, err: err}
	}
	var early chan stream
	if len(firstRuns) > 0 {
		early = make(chan stream, 1)
		go func() { early <- openRun(firstRuns[0], limit) }()
	}
	countQ := cloneRequest(r, "/api/v1/count", func(v url.Values) {
		for _, k := range []string{"limit", "continue", "format", "pretty"} {
			v.Del(k)
		}
		v.Set("groupBy", "cluster")
	})
	parts, orphans := rt.gather(countQ, local, nil)
	var first *stream
	if early != nil {
		st := <-early
		first = &st
	}
	defer func() {
		if first != nil && first.body != nil {
			first.body.Close()
		}
	}()
	if p := clientError(parts); p != nil {
		writeRaw(w, p.status, p.body)
		return
	}
	counts, fresh, partial, resource, placed := rt.mergeCounts(parts, orphans)

	// The runs of the page: clusters with something selected (or the one the page resumes
	// in), each with the replica the counts came from.
	var todo []string
	for _, c := range ahead {
		if counts[c] > 0 || (c == afterCluster && placed.by[c] != nil) {
			todo = append(todo, c)
		}
	}
	plan := runs(todo, func(c string) *reader { return placed.by[c] })
	if first != nil && len(plan) > 0 && (first.err != nil || first.status != http.StatusOK ||
		first.run.rd.member.Identity != plan[0].rd.member.Identity || first.run.clusters[0] != plan[0].clusters[0]) {
		first.body, first = closeStream(first.body), nil // its replica failed over, or it starts on a cluster with nothing: ask again
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	w.Header().Set("Content-Type", "application/json")
	head := linesHead{Resource: resource}
	started := false
	start := func(h linesHead) {
		if len(h.Resource) == 0 {
			h.Resource = resource
		}
		writeListHead(bw, &h, rows, fresh, partial)
		started = true
	}
	sent, cont := 0, ""
	var last []byte
	for i, rn := range plan {
		var st stream
		if i == 0 && first != nil {
			st = *first
			if len(st.run.clusters) > len(rn.clusters) {
				rn.clusters = st.run.clusters // the early run covers clusters with nothing too
			}
			first = nil
		} else {
			st = openRun(rn, limit-sent)
		}
		if st.err != nil || st.status != http.StatusOK {
			if st.body != nil {
				st.body.Close()
			}
			if !started {
				writeError(w, http.StatusServiceUnavailable, "ReplicaUnavailable",
					fmt.Sprintf("replica %s did not send its part of the page (HTTP %d, %v); try again", rn.rd.member.Identity, st.status, st.err))
				return
			}
			_ = bw.Flush()
			return // cut short: the client sees a cut answer, as from a failing local list
		}
		_, n, tail, readerCont, ok := copyRun(bw, st.body, rows, sent == 0, start, started)
		st.body.Close()
		if !ok {
			_ = bw.Flush()
			return
		}
		if tail != nil {
			last = tail
		}
		sent += n
		if readerCont != "" || sent >= limit {
			// The page is full, or the replica cut it (response cap): resume after the last.
			if last != nil {
				cont = positionOf(last, rows)
			}
			break
		}
		if i == len(plan)-1 {
			break // every run read: the list is complete
		}
	}
	if !started {
		start(head)
	}
	if cont == "" && sent >= limit && last != nil {
		cont = positionOf(last, rows)
	}
	token := ""
	if cont != "" {
		raw, _ := json.Marshal(position{Query: qh, After: cont, Issued: time.Now().Unix()})
		token = aggregator.SignToken(raw)
	}
	writeListTail(bw, rows, token)
	_ = bw.Flush()
}

func closeStream(body io.ReadCloser) io.ReadCloser {
	if body != nil {
		body.Close()
	}
	return nil
}

// withParams is r's query with params set, for a replica.
func withParams(r *http.Request, params url.Values) string {
	q := r.URL.Query()
	q.Del("continue")
	for k, v := range params {
		q[k] = v
	}
	q.Set("local", "true")
	return q.Encode()
}

// copyRun copies one reader's items (framing=lines) into the page: the list head comes
// first (start writes it on the first run, with the run's head), then its items, each
// after a comma unless it is the page's first. It returns the run's last item, the
// reader's continue token (set when it cut its answer short) and whether the answer was
// whole.
func copyRun(bw *bufio.Writer, body io.Reader, rows, firstOfPage bool, start func(linesHead), started bool) (head linesHead, n int, last []byte, readerCont string, ok bool) {
	br := bufio.NewReaderSize(body, 256<<10)
	headLine, err := br.ReadSlice('\n')
	if err != nil || json.Unmarshal(headLine, &head) != nil {
		return head, 0, nil, "", false
	}
	if !started {
		start(head)
	}
	for {
		// Lines are read in place (no copy per item); an item longer than the buffer is
		// gathered whole.
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long := append([]byte(nil), line...)
			var rest []byte
			rest, err = br.ReadBytes('\n')
			line = append(long, rest...)
		}
		if err != nil {
			return head, n, last, "", false
		}
		line = line[:len(line)-1]
		if len(line) == 0 {
			continue // the line break before the tail of an empty answer
		}
		if bytes.HasPrefix(line, []byte(`{"continue":`)) { // the tail: items start with {"cluster": or {"cells":
			var t struct {
				Continue string `json:"continue"`
			}
			if json.Unmarshal(line, &t) != nil {
				return head, n, last, "", false
			}
			return head, n, last, t.Continue, true
		}
		if n > 0 || !firstOfPage {
			_ = bw.WriteByte(',')
		}
		_, _ = bw.Write(line)
		last, n = append(last[:0], line...), n+1 // line is only good until the next read
	}
}

// placement is where each cluster of a page's plan is read.
type placement struct {
	order []string // clusters with a reader, sorted
	by    map[string]*reader
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
