package sharding

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
)

// watchLine is one line of /api/v1/watch, as the replicas write it.
type watchLine struct {
	Type            string          `json:"type"`
	Cluster         string          `json:"cluster,omitempty"`
	ResourceVersion string          `json:"resourceVersion,omitempty"`
	Cursor          string          `json:"cursor,omitempty"`
	Object          json.RawMessage `json:"object,omitempty"`
	Error           json.RawMessage `json:"error,omitempty"`
}

type objectMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace,omitempty"`
	} `json:"metadata"`
}

// upstream is one replica's watch of some clusters, for one client's stream.
type upstream struct {
	reader   Member
	clusters []string
	cancel   context.CancelFunc
	synced   bool // its initial events ended
	seen     map[string]map[string]bool
}

type upstreamLine struct {
	up   *upstream
	line watchLine
	err  error // the stream ended
}

// watchMembershipPoll is how often a routed watch checks whether its clusters moved.
const watchMembershipPoll = time.Second

// watch fans the owners' watches of the selected clusters into one stream. A stream
// through a router starts now, like a local one. When a cluster moves (its owner died,
// or a replica joined), the router watches it on its new owner from that owner's current
// state and sends the client only the difference to what it had sent: objects added or
// changed meanwhile, and DELETED for those gone. Changes made while a cluster had no
// owner arrive as that difference, as after an informer's relist; nothing is sent twice.
// Cursors are per replica process: a routed stream sends none, and resuming one with a
// cursor gets 410 (list again).
func (rt *Router) watch(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("cursor") != "" {
		writeError(w, http.StatusGone, "Expired", "a watch through a sharded replica cannot resume from a cursor (cursors belong to the replica that issued them); list again and watch from now")
		return
	}
	cands, _ := rt.candidates(r)
	if len(cands) == 0 {
		writeError(w, http.StatusNotFound, "NotFound", "no cluster selected")
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(rt.streams(), cancel) // shutdown ends routed streams too
	defer stop()
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var buf []byte // one line at a time, reused
	write := func(l watchLine) bool {
		raw := appendLine(buf[:0], l)
		buf = raw
		var err error
		if sse {
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", strings.ToLower(l.Type), raw)
		} else {
			buf = append(raw, '\n')
			_, err = w.Write(buf)
		}
		if flusher != nil {
			flusher.Flush()
		}
		return err == nil
	}

	lines := make(chan upstreamLine)
	known := map[string]map[string]string{} // cluster -> namespace/name -> resourceVersion sent
	current := map[string]*upstream{}       // cluster -> the upstream whose events count
	failed := map[string]bool{}
	open := func(reader Member, clusters []string) {
		up := &upstream{reader: reader, clusters: clusters, seen: map[string]map[string]bool{}}
		uctx, ucancel := context.WithCancel(ctx)
		up.cancel = ucancel
		go rt.follow(uctx, r, up, lines)
	}
	pending := map[string]bool{} // clusters with a replica's watch opened, not caught up yet
	place := func(clusters []string) {
		readers, _ := rt.readers(cands, clusters, failed)
		for _, rd := range readers {
			// Every replica, this one too, is asked over HTTP: a watch is a stream.
			open(rd.member, rd.clusters)
			for _, c := range rd.clusters {
				pending[c] = true
			}
		}
	}
	all := make([]string, 0, len(cands))
	for c := range cands {
		all = append(all, c)
	}
	place(all)
	if !write(watchLine{Type: "BOOKMARK"}) {
		return
	}
	heartbeat := time.NewTicker(30 * time.Second)
	defer heartbeat.Stop()
	poll := time.NewTicker(watchMembershipPoll)
	defer poll.Stop()
	first := map[string]bool{} // clusters whose first upstream has not ended its initial events
	for _, c := range all {
		first[c] = true
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-heartbeat.C:
			if !write(watchLine{Type: "BOOKMARK"}) {
				return
			}
		case <-poll.C:
			// Clusters whose reader changed move to their new reader.
			cands, _ = rt.candidates(r)
			var move []string
			for c, up := range current {
				if pending[c] {
					continue
				}
				if owners := cands[c]; len(owners) > 0 && owners[0].Identity != up.reader.Identity && !failed[owners[0].Identity] {
					move = append(move, c)
				}
			}
			for c := range cands {
				if _, ok := current[c]; !ok && !pending[c] {
					move = append(move, c) // a cluster that had no replica to answer for it
				}
			}
			if len(move) > 0 {
				failed = map[string]bool{} // a new membership: give every replica a chance
				place(move)
			}
		case ul := <-lines:
			up := ul.up
			if ul.err != nil {
				if ctx.Err() != nil {
					return
				}
				rt.Logger.Info("routed watch: a replica's stream ended; moving its clusters", zap.String("replica", up.reader.Identity), zap.Error(ul.err))
				failed[up.reader.Identity] = true
				var lost []string
				for _, c := range up.clusters {
					switch {
					case current[c] == up:
						delete(current, c)
						lost = append(lost, c)
					case !up.synced:
						delete(pending, c) // it never caught up; placed again below
						lost = append(lost, c)
					}
				}
				cands, _ = rt.candidates(r)
				place(lost)
				continue
			}
			l := ul.line
			if l.Type == "BOOKMARK" {
				if up.synced {
					continue
				}
				// Initial events ended: this upstream takes its clusters over, and what
				// the client had of them but the replica no longer has is gone.
				up.synced = true
				for _, c := range up.clusters {
					if old := current[c]; old != nil && old != up {
						old.drop(c)
					}
					current[c] = up
					delete(pending, c)
					if first[c] {
						delete(first, c)
						continue
					}
					for key, rv := range known[c] {
						if !up.seen[c][key] {
							delete(known[c], key)
							if !write(deleted(c, key, rv)) {
								return
							}
						}
					}
				}
				up.seen = nil
				continue
			}
			if l.Type == "ERROR" {
				continue // the replica ends the stream next; its clusters move then
			}
			var meta objectMeta
			_ = json.Unmarshal(l.Object, &meta)
			key := meta.Metadata.Namespace + "/" + meta.Metadata.Name
			c := l.Cluster
			l.Cursor = "" // the replica's; it means nothing to the client
			if !up.synced {
				// Initial state: record it; send only what differs from what the client has.
				if up.seen[c] == nil {
					up.seen[c] = map[string]bool{}
				}
				up.seen[c][key] = true
				if known[c] == nil {
					known[c] = map[string]string{}
				}
				if first[c] {
					known[c][key] = l.ResourceVersion
					continue
				}
				if rv, ok := known[c][key]; ok && rv == l.ResourceVersion {
					continue
				} else if ok {
					l.Type = "MODIFIED"
				}
				known[c][key] = l.ResourceVersion
				if !write(l) {
					return
				}
				continue
			}
			if current[c] != up {
				continue // the cluster moved away from this replica
			}
			if known[c] == nil {
				known[c] = map[string]string{}
			}
			if l.Type == "DELETED" {
				delete(known[c], key)
			} else {
				known[c][key] = l.ResourceVersion
			}
			if !write(l) {
				return
			}
		}
	}
}

// drop forgets cluster; the upstream stops when it has none left.
func (up *upstream) drop(cluster string) {
	for i, c := range up.clusters {
		if c == cluster {
			up.clusters = append(up.clusters[:i], up.clusters[i+1:]...)
			break
		}
	}
	if len(up.clusters) == 0 {
		up.cancel()
	}
}

// deleted is the DELETED event for an object the client had and the cluster's new
// replica no longer has. Its object carries the identity only: the router keeps each
// object's resourceVersion, not its body.
func deleted(cluster, key, rv string) watchLine {
	ns, name, _ := strings.Cut(key, "/")
	meta := map[string]any{"name": name, "resourceVersion": rv}
	if ns != "" {
		meta["namespace"] = ns
	}
	obj, _ := json.Marshal(map[string]any{"metadata": meta})
	return watchLine{Type: "DELETED", Cluster: cluster, ResourceVersion: rv, Object: obj}
}

// follow reads one replica's watch of up's clusters, starting from their current state,
// into lines, until ctx ends or the stream does.
func (rt *Router) follow(ctx context.Context, r *http.Request, up *upstream, lines chan<- upstreamLine) {
	send := func(ul upstreamLine) bool {
		select {
		case lines <- ul:
			return true
		case <-ctx.Done():
			return false
		}
	}
	q := r.URL.Query()
	q.Set("local", "true")
	q.Set("only", strings.Join(up.clusters, ","))
	q.Set("initialEvents", "true")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(up.reader.Address, "/")+"/api/v1/watch?"+q.Encode(), nil)
	if err != nil {
		send(upstreamLine{up: up, err: err})
		return
	}
	if a := r.Header.Get("Authorization"); a != "" {
		req.Header.Set("Authorization", a)
	}
	resp, err := rt.Client.Do(req)
	if err != nil {
		send(upstreamLine{up: up, err: err})
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		send(upstreamLine{up: up, err: fmt.Errorf("HTTP %d", resp.StatusCode)})
		return
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var l watchLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			send(upstreamLine{up: up, err: fmt.Errorf("unreadable line: %w", err)})
			return
		}
		if !send(upstreamLine{up: up, line: l}) {
			return
		}
	}
	err = sc.Err()
	if err == nil {
		err = fmt.Errorf("stream ended")
	}
	send(upstreamLine{up: up, err: err})
}

// appendLine appends l as a line of /api/v1/watch. The replica's object is spliced in as
// it came: re-encoding it would scan and copy every event's object once more.
func appendLine(dst []byte, l watchLine) []byte {
	str := func(s string) { raw, _ := json.Marshal(s); dst = append(dst, raw...) }
	dst = append(dst, `{"type":`...)
	str(l.Type)
	if l.Cluster != "" {
		dst = append(dst, `,"cluster":`...)
		str(l.Cluster)
	}
	if l.ResourceVersion != "" {
		dst = append(dst, `,"resourceVersion":`...)
		str(l.ResourceVersion)
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{`,"object":`, l.Object}, {`,"error":`, l.Error}} {
		if len(f.raw) > 0 {
			dst = append(dst, f.name...)
			dst = append(dst, f.raw...)
		}
	}
	return append(dst, '}')
}
