package sharding

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/kubeapi"
	"github.com/fleetcache/fleetcache/internal/request"
	"github.com/fleetcache/fleetcache/internal/wire"
)

// The Kubernetes read API on /fleet, through a sharded replica: lists, gets and watches
// are asked of the replicas that cache the selected clusters, in parallel, and merged,
// so kubectl and client-go see the whole fleet through any replica.
//
//   - Lists (JSON and Table) are answered whole, as a single daemon answers them: each
//     reader streams its clusters' part in framing=lines (internal/kubeapi) and the parts
//     are merged in cluster, namespace and name order. A reader that cuts its part at the
//     response cap cuts the merged list there, with a continue token of the router's.
//   - A list's resourceVersion is the router's: every reader's own resourceVersion and a
//     digest of the clusters it answered for. A watch from it resumes on each reader from
//     that reader's position, as long as every reader still answers for the same
//     clusters; after a membership change it is 410 Expired and the client lists again
//     (what kube-apiserver answers when its watch cache cannot continue).
//   - A watch open when a membership change moves one of its clusters ends with 410
//     Expired: a client-go informer lists again through the router, from the new owners.
//   - Answers are JSON (Table when asked): what a replica merges without decoding. Every
//     Kubernetes client accepts JSON.
//
// Clusters no live replica answers for are named in a Warning header, which kubectl
// prints; nothing is missing silently.

// fleet routes a /fleet request: discovery, version and OpenAPI are the same on every
// replica and answered here.
func (rt *Router) fleet(w http.ResponseWriter, r *http.Request, local http.Handler) {
	path := strings.TrimPrefix(r.URL.Path, "/fleet")
	if !resourceRequest(path) {
		local.ServeHTTP(w, r)
		return
	}
	name, ok := objectName(path)
	if !ok {
		local.ServeHTTP(w, r) // a subresource or a malformed path: the local answer says why
		return
	}
	if !kubeapi.AcceptsJSON(r) {
		writeStatus(w, http.StatusNotAcceptable, "NotAcceptable",
			"a sharded fleetcache replica answers /fleet in JSON (application/json, or a Table); ask for it in Accept")
		return
	}
	switch {
	case request.IsWatch(r):
		rt.fleetWatch(w, r, local)
	case name != "":
		rt.fleetGet(w, r, local)
	default:
		rt.fleetList(w, r, local)
	}
}

// objectName returns the object a Kubernetes API resource path names ("" for a
// collection); false for a subresource or anything else the router does not merge.
func objectName(path string) (string, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var rest []string
	switch parts[0] {
	case "api":
		rest = parts[2:]
	case "apis":
		rest = parts[3:]
	}
	switch {
	case len(rest) >= 3 && rest[0] == "namespaces":
		switch len(rest) {
		case 3:
			return "", true
		case 4:
			return rest[3], true
		}
		return "", false
	case len(rest) == 1:
		return "", true
	case len(rest) == 2:
		return rest[1], true
	}
	return "", false
}

// jsonAccept is what the router asks readers for: a Table when the client wants one,
// else JSON, whatever else the client accepts (protobuf would have to be decoded to be
// merged).
func jsonAccept(r *http.Request) http.Header {
	if kubeapi.WantsTable(r) {
		return http.Header{"Accept": {"application/json;as=Table;v=v1;g=meta.k8s.io"}}
	}
	return http.Header{"Accept": {"application/json"}}
}

// writeStatus writes a Kubernetes Status, as kube-apiserver words its errors.
func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": reason, "code": code})
}

// version is the resourceVersion of a list or watch event through a router: each
// reader's own resourceVersion, with a digest of the clusters it answered for.
type version map[string]readerVersion

type readerVersion struct {
	RV       string `json:"v"`
	Clusters string `json:"c"`
}

func (v version) encode() string { return encodeRouted(v) }

var errNotRouterVersion = errors.New("not a resourceVersion a sharded replica issues")

func parseVersion(s string) (version, error) {
	var v version
	if err := decodeRouted(s, &v); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotRouterVersion, err)
	}
	return v, nil
}

// routedPrefix marks what a router issues (resourceVersions of /fleet, cursors of
// /api/v1/watch): base64 JSON after it, opaque to clients.
const routedPrefix = "sharded."

func encodeRouted(v any) string {
	raw, _ := json.Marshal(v)
	return routedPrefix + base64.RawURLEncoding.EncodeToString(raw)
}

func decodeRouted(s string, v any) error {
	enc, ok := strings.CutPrefix(s, routedPrefix)
	if !ok {
		return errors.New("no " + routedPrefix + " prefix")
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

func clusterDigest(clusters []string) string {
	h := sha256.Sum256([]byte(strings.Join(clusters, "\x00")))
	return hex.EncodeToString(h[:8])
}

// matches reports whether readers answer for the same clusters as when v was issued.
func (v version) matches(readers []*reader) bool {
	if len(v) != len(readers) {
		return false
	}
	for _, rd := range readers {
		if e, ok := v[rd.member.Identity]; !ok || e.Clusters != clusterDigest(rd.clusters) {
			return false
		}
	}
	return true
}

// readerQuery is the request's query for one reader: narrowed to its clusters, with
// params set and drop removed.
func readerQuery(r *http.Request, rd *reader, params url.Values, drop ...string) string {
	q := r.URL.Query()
	for _, k := range drop {
		q.Del(k)
	}
	for k, v := range params {
		q[k] = v
	}
	q.Set("local", "true")
	q.Set("only", strings.Join(rd.clusters, ","))
	return r.URL.Path + "?" + q.Encode()
}

// partialWarning names the clusters no replica answered for, and why, in a Warning
// kubectl prints (grouped by reason, at most 20 names per reason).
func partialWarning(w http.ResponseWriter, missing map[string]string) {
	if len(missing) == 0 {
		return
	}
	byReason := map[string][]string{}
	for c, why := range missing {
		byReason[why] = append(byReason[why], c)
	}
	var groups []string
	for why, names := range byReason {
		sort.Strings(names)
		if len(names) > 20 {
			names = append(names[:20:20], fmt.Sprintf("and %d more", len(names)-20))
		}
		groups = append(groups, strings.Join(names, ", ")+" ("+why+")")
	}
	sort.Strings(groups)
	msg := "fleetcache: partial answer: no replica answered for " + strings.Join(groups, "; ")
	// A warning's text is a quoted string: no quotes or line breaks inside.
	msg = strings.NewReplacer(`"`, "'", `\`, "/", "\n", " ").Replace(msg)
	w.Header().Add("Warning", `299 - "`+msg+`"`)
}

// fleetResponse is one reader's answer.
type fleetResponse struct {
	rd   *reader
	resp *http.Response
	err  error
}

func (f fleetResponse) failed() bool {
	return f.err != nil || f.resp.StatusCode >= 500 || f.resp.StatusCode == http.StatusTooManyRequests
}

func (f fleetResponse) reason() string {
	if f.err != nil {
		err := f.err
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is the router's business
		}
		return fmt.Sprintf("replica %s: %v", f.rd.member.Identity, err)
	}
	return fmt.Sprintf("replica %s: HTTP %d", f.rd.member.Identity, f.resp.StatusCode)
}

// openAll opens every reader's answer in parallel; the clusters of a reader that fails
// are asked of their next owner. It returns the answers that came (a 4xx included: it
// is about the request) and, for every cluster nobody answered for, why.
func (rt *Router) openAll(ctx context.Context, r *http.Request, local http.Handler, pathQuery func(*reader) string) ([]fleetResponse, map[string]string) {
	cands, orphans := rt.candidates(r)
	missing := map[string]string{}
	for _, c := range orphans {
		missing[c] = "no live replica owns it"
	}
	pending := make([]string, 0, len(cands))
	for c := range cands {
		pending = append(pending, c)
	}
	failed := map[string]bool{}
	var out []fleetResponse
	for len(pending) > 0 {
		readers, none := rt.readers(cands, pending, failed)
		for _, c := range none {
			if _, ok := missing[c]; !ok {
				missing[c] = "no live replica owns it"
			}
		}
		got := make([]fleetResponse, len(readers))
		var wg sync.WaitGroup
		for i, rd := range readers {
			wg.Go(func() {
				resp, err := rt.openResponse(ctx, r, rd, local, pathQuery(rd), jsonAccept(r))
				got[i] = fleetResponse{rd: rd, resp: resp, err: err}
			})
		}
		wg.Wait()
		pending = nil
		for _, f := range got {
			if !f.failed() {
				out = append(out, f)
				continue
			}
			if f.resp != nil {
				f.resp.Body.Close()
			}
			failed[f.rd.member.Identity] = true
			for _, c := range f.rd.clusters {
				missing[c] = f.reason() // until a next owner answers for it
			}
			pending = append(pending, f.rd.clusters...)
		}
	}
	for _, f := range out {
		for _, c := range f.rd.clusters {
			delete(missing, c)
		}
	}
	return out, missing
}

func closeAll(fs []fleetResponse) {
	for _, f := range fs {
		if f.resp != nil {
			f.resp.Body.Close()
		}
	}
}

// clientErrorOf returns the first answer about the request itself (4xx): every replica
// would say the same. A replica that does not know the resource at all (404: none of its
// clusters serves a custom resource, so it never learnt its version) has nothing to add
// to a list or watch: such answers are dropped from fs, unless every replica says so.
func clientErrorOf(fs *[]fleetResponse) *fleetResponse {
	var kept []fleetResponse
	var notFound *fleetResponse
	for i, f := range *fs {
		switch {
		case f.resp.StatusCode == http.StatusNotFound:
			notFound = &(*fs)[i]
		case f.resp.StatusCode >= 400:
			return &(*fs)[i]
		default:
			kept = append(kept, f)
		}
	}
	if notFound != nil && len(kept) == 0 {
		return notFound
	}
	if notFound != nil {
		for _, f := range *fs {
			if f.resp.StatusCode == http.StatusNotFound {
				f.resp.Body.Close()
			}
		}
		*fs = kept
	}
	return nil
}

func forward(w http.ResponseWriter, f *fleetResponse) {
	for _, k := range []string{"Content-Type", "Warning"} {
		for _, v := range f.resp.Header.Values(k) {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(f.resp.StatusCode)
	_, _ = io.Copy(w, f.resp.Body)
}

const continuePrefix = "sharded~"

// fleetList merges the readers' lists.
func (rt *Router) fleetList(w http.ResponseWriter, r *http.Request, local http.Handler) {
	after := ""
	if tok := r.URL.Query().Get("continue"); tok != "" {
		var c position
		raw, err := aggregator.VerifyToken(strings.TrimPrefix(tok, continuePrefix))
		if err == nil && strings.HasPrefix(tok, continuePrefix) {
			err = json.Unmarshal(raw, &c)
		} else if err == nil {
			err = aggregator.ErrInvalidToken
		}
		if err == nil && c.Query != queryHash(r) {
			err = errors.New("the continue token was issued for a different list")
		}
		if err != nil {
			// kube-apiserver's answer to a continue token it cannot use: 410, list again.
			writeStatus(w, http.StatusGone, "Expired", "continue token: "+err.Error()+"; list again without it")
			return
		}
		after = c.After
	}
	if rv := r.URL.Query().Get("resourceVersion"); rv != "" && rv != "0" && r.URL.Query().Get("resourceVersionMatch") == "Exact" {
		writeStatus(w, http.StatusGone, "Expired", "resourceVersionMatch=Exact: a sharded replica keeps only the current state; list without it")
		return
	}
	atOnce := request.Read{UpperBound: true, Limit: r.URL.Query().Get("limit")}.AtOnce()
	params := url.Values{"framing": {"lines"}}
	if after != "" {
		params.Set("after", after)
	}
	fs, missing := rt.openAll(r.Context(), r, local, func(rd *reader) string {
		return readerQuery(r, rd, params, "continue", "limit", "resourceVersion", "resourceVersionMatch")
	})
	defer closeAll(fs)
	if len(fs) == 0 && len(missing) == 0 {
		local.ServeHTTP(w, r) // no cluster selected: the local (empty) answer
		return
	}
	if f := clientErrorOf(&fs); f != nil {
		forward(w, f)
		return
	}
	partialWarning(w, missing)
	for _, f := range fs {
		for _, v := range f.resp.Header.Values("Warning") {
			w.Header().Add("Warning", v)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	defer bw.Flush()

	parts := make([]*linePart, len(fs))
	for i, f := range fs {
		parts[i] = &linePart{br: bufio.NewReaderSize(f.resp.Body, 256<<10), rd: f.rd}
	}
	head, ok := []byte(nil), true
	for _, p := range parts {
		h, err := p.head()
		if err != nil {
			ok = false
			break
		}
		if head == nil {
			head = h
		}
	}
	if !ok || len(parts) == 0 {
		if len(parts) == 0 {
			writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable", "no replica answered for any selected cluster")
			return
		}
		writeStatus(w, http.StatusBadGateway, "InternalError", "a replica's part of the list was unreadable; try again")
		return
	}
	_, _ = bw.Write(head)
	n, last, cut, size := 0, "", false, 0
	for {
		// The part whose next item comes first: the parts answer for disjoint clusters,
		// each in order.
		var next *linePart
		for _, p := range parts {
			if !p.done && (next == nil || p.cluster < next.cluster) {
				next = p
			}
		}
		if next == nil {
			break
		}
		if n > 0 {
			_ = bw.WriteByte(',')
		}
		_, _ = bw.Write(next.item)
		n, size = n+1, size+len(next.item)
		last = next.position()
		if err := next.advance(); err != nil {
			return // cut short: the client sees a cut answer, as from a failing list
		}
		// A reader cut its part at the response cap, or the merge reached it: the list
		// continues after the last item sent. A list asked at once is never cut.
		if next.done && next.cont != "" || !atOnce && size >= rt.MaxResponseBytes && !allDone(parts) {
			cut = true
			break
		}
	}
	v := version{}
	for _, p := range parts {
		v[p.rd.member.Identity] = readerVersion{RV: p.rv, Clusters: clusterDigest(p.rd.clusters)}
	}
	cont := ""
	if cut {
		raw, _ := json.Marshal(position{Query: queryHash(r), After: last, Issued: time.Now().Unix()})
		cont = continuePrefix + aggregator.SignToken(raw)
	}
	tail := wire.AppendListMeta([]byte("],"), v.encode(), cont)
	_, _ = bw.Write(append(tail, "}\n"...))
}

func allDone(parts []*linePart) bool {
	for _, p := range parts {
		if !p.done {
			return false
		}
	}
	return true
}

// linePart reads one reader's list in framing=lines.
type linePart struct {
	br   *bufio.Reader
	rd   *reader
	done bool
	// the current item and its position
	cluster, namespace, name string
	item                     []byte
	// from the tail
	rv, cont string
}

var errFraming = errors.New("unexpected line in a replica's list")

// head reads the list's opening and the first item.
func (p *linePart) head() ([]byte, error) {
	line, err := p.line()
	if err != nil {
		return nil, err
	}
	if len(line) == 0 || line[0] != 'h' {
		return nil, errFraming
	}
	h := append([]byte(nil), line[1:]...)
	return h, p.advance()
}

func (p *linePart) line() ([]byte, error) {
	for {
		line, err := p.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long := append([]byte(nil), line...)
			var rest []byte
			rest, err = p.br.ReadBytes('\n')
			line = append(long, rest...)
		}
		if err != nil {
			return nil, err
		}
		line = line[:len(line)-1]
		if len(line) > 0 {
			return line, nil
		}
	}
}

// advance reads the next item, or the tail.
func (p *linePart) advance() error {
	line, err := p.line()
	if err != nil {
		return err
	}
	switch line[0] {
	case 'i':
		rest := line[1:]
		var fields [3]string
		for i := range fields {
			if fields[i], rest, err = cutString(rest); err != nil {
				return err
			}
		}
		p.cluster, p.namespace, p.name, p.item = fields[0], fields[1], fields[2], rest
		return nil
	case 't':
		var meta struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
				Continue        string `json:"continue"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(append([]byte("{"), append(line[1:], '}')...), &meta); err != nil {
			return err
		}
		p.rv, p.cont, p.done = meta.Metadata.ResourceVersion, meta.Metadata.Continue, true
		return nil
	}
	return errFraming
}

func (p *linePart) position() string { return p.cluster + "/" + p.namespace + "/" + p.name }

// cutString reads the JSON string b starts with.
func cutString(b []byte) (string, []byte, error) {
	if len(b) == 0 || b[0] != '"' {
		return "", nil, errFraming
	}
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			raw := b[:i+1]
			if bytes.IndexByte(raw, '\\') < 0 {
				return string(raw[1:i]), b[i+1:], nil
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", nil, err
			}
			return s, b[i+1:], nil
		}
	}
	return "", nil, errFraming
}

// fleetGet asks every reader for the object; as on a single daemon, the one in the first
// cluster (in name order) that has it is the answer, its annotation saying which.
func (rt *Router) fleetGet(w http.ResponseWriter, r *http.Request, local http.Handler) {
	fs, missing := rt.openAll(r.Context(), r, local, func(rd *reader) string { return readerQuery(r, rd, nil) })
	defer closeAll(fs)
	if len(fs) == 0 && len(missing) == 0 {
		local.ServeHTTP(w, r)
		return
	}
	partialWarning(w, missing)
	var best *fleetResponse
	var bestBody []byte
	bestCluster := ""
	var notFound *fleetResponse
	for i := range fs {
		f := &fs[i]
		if f.resp.StatusCode != http.StatusOK {
			if notFound == nil || f.resp.StatusCode != http.StatusNotFound {
				notFound = f
			}
			continue
		}
		body, err := io.ReadAll(f.resp.Body)
		if err != nil {
			continue
		}
		c := answeredCluster(body)
		if best == nil || c < bestCluster {
			best, bestBody, bestCluster = f, body, c
		}
	}
	if best == nil {
		if notFound == nil {
			writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable", "no replica answered for any selected cluster")
			return
		}
		forward(w, notFound)
		return
	}
	w.Header().Set("Content-Type", best.resp.Header.Get("Content-Type"))
	_, _ = w.Write(bestBody)
}

// answeredCluster reads which cluster a get answered from: the object's cluster
// annotation, or a Table row's first cell.
func answeredCluster(body []byte) string {
	var v struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Rows []struct {
			Cells []json.RawMessage `json:"cells"`
		} `json:"rows"`
	}
	_ = json.Unmarshal(body, &v)
	if c, ok := v.Metadata.Annotations[kubeapi.ClusterAnnotation]; ok {
		return c
	}
	if len(v.Rows) > 0 && len(v.Rows[0].Cells) > 0 {
		var c string
		_ = json.Unmarshal(v.Rows[0].Cells[0], &c)
		return c
	}
	return ""
}
