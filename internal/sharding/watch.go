package sharding

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/fleetcache/fleetcache/aggregator"
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
	// from resumes the replica's stream after this cursor of its own, instead of
	// starting with its clusters' current state.
	from string
}

type upstreamLine struct {
	up   *upstream
	line watchLine
	err  error // the stream ended
}

// watchMembershipPoll is how often a routed watch checks whether its clusters moved.
const watchMembershipPoll = time.Second

// watchStartTimeout bounds how long a routed watch waits for every replica's stream
// before it answers.
const watchStartTimeout = 10 * time.Second

// watch fans the owners' watches of the selected clusters into one stream. A stream
// through a router starts now, like a local one. When a cluster moves (its owner died,
// or a replica joined), the router watches it on its new owner from that owner's current
// state and sends the client only the difference to what it had sent: objects added or
// changed meanwhile, and DELETED for those gone. Changes made while a cluster had no
// owner arrive as that difference, as after an informer's relist; nothing is sent twice.
//
// Every line carries the router's cursor: for each cluster, the replica that answers for
// it, that replica's epoch and the cluster's position there. A stream resumed from it
// (through any replica) continues on each of those replicas where it left off, as long as
// each cluster is still answered for by the same replica; otherwise it is 410 (list
// again), since the new one cannot know what the client had. Clusters selected since
// start with their current state, as ADDED events.
func (rt *Router) watch(w http.ResponseWriter, r *http.Request) {
	cands, _ := rt.candidates(r)
	if len(cands) == 0 {
		writeError(w, http.StatusNotFound, "NotFound", "no cluster selected")
		return
	}
	var resume routedCursor
	if s := r.URL.Query().Get("cursor"); s != "" {
		var err error
		if resume, err = parseRoutedCursor(s); err == nil {
			err = resume.check(rt, cands)
		}
		if err != nil {
			writeError(w, http.StatusGone, "Expired", "cursor: "+err.Error())
			return
		}
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
	// The status line waits until every replica's stream has caught up (or startTimeout):
	// once a client has it, every later change reaches it, as with a local stream.
	flusher, _ := w.(http.Flusher)
	var buf []byte // one line at a time, reused
	started := false
	write := func(l watchLine) bool {
		started = true
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
	positions := map[string]clusterPosition{} // cluster -> where the client is in it (the cursor)
	// Clusters resumed from a cursor: what the client has of them is unknown here, so
	// if they move, the stream ends with 410 instead of sending a difference.
	unknown := map[string]bool{}
	open := func(reader Member, clusters []string, from string) {
		up := &upstream{reader: reader, clusters: clusters, seen: map[string]map[string]bool{}, from: from}
		uctx, ucancel := context.WithCancel(ctx)
		up.cancel = ucancel
		go rt.follow(uctx, r, up, lines)
	}
	pending := map[string]bool{} // clusters with a replica's watch opened, not caught up yet
	place := func(clusters []string) {
		readers, _ := rt.readers(cands, clusters, failed)
		for _, rd := range readers {
			// Every replica, this one too, is asked over HTTP: a watch is a stream.
			open(rd.member, rd.clusters, "")
			for _, c := range rd.clusters {
				pending[c] = true
			}
		}
	}
	first := map[string]bool{} // clusters whose first upstream has not ended its initial events
	var all []string
	for c := range cands {
		if from, ok := resume.find(c); ok {
			positions[c] = from
			unknown[c] = true
			continue
		}
		all = append(all, c)
		if resume == nil {
			first[c] = true // the stream starts now: their current state is not sent
		}
	}
	for _, rp := range resume.byReader(cands) {
		open(rp.member, rp.clusters, rp.cursor)
		for _, c := range rp.clusters {
			pending[c] = true
			first[c] = true // resumed: nothing to send until its changes come
		}
	}
	place(all)
	cursor := func() string {
		if len(first) > 0 {
			return "" // a cluster's starting position is not known yet
		}
		return encodeRoutedCursor(positions)
	}
	if len(first) == 0 && !write(watchLine{Type: "BOOKMARK", Cursor: cursor()}) {
		return
	}
	startBy := time.NewTimer(watchStartTimeout)
	defer startBy.Stop()
	heartbeat := time.NewTicker(30 * time.Second)
	defer heartbeat.Stop()
	poll := time.NewTicker(watchMembershipPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-startBy.C:
			// A replica is slow to catch up: start without it (its clusters' changes come
			// once it has).
			if !started && !write(watchLine{Type: "BOOKMARK", Cursor: cursor()}) {
				return
			}
		case <-heartbeat.C:
			if !write(watchLine{Type: "BOOKMARK", Cursor: cursor()}) {
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
				// A cluster stays on its replica while that one still owns it (with
				// sharding.replicas: 2, either copy serves it).
				if owners := cands[c]; len(owners) > 0 && !isOwner(owners, up.reader.Identity) && !failed[owners[0].Identity] {
					move = append(move, c)
				}
			}
			for c := range cands {
				if _, ok := current[c]; !ok && !pending[c] {
					move = append(move, c) // a cluster that had no replica to answer for it
				}
			}
			if len(move) > 0 {
				if gone := unknownOf(move, unknown); gone != "" {
					write(expired(gone))
					return
				}
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
				if gone := unknownOf(lost, unknown); gone != "" {
					write(expired(gone))
					return
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
				epoch, start, err := aggregator.DecodeCursor(l.Cursor)
				if err != nil {
					rt.Logger.Info("routed watch: a replica's bookmark has no readable cursor", zap.String("replica", up.reader.Identity), zap.Error(err))
				}
				wasFirst := len(first) > 0
				for _, c := range up.clusters {
					positions[c] = clusterPosition{Reader: up.reader.Identity, Epoch: epoch, RV: start[c]}
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
				if wasFirst && len(first) == 0 {
					// Every cluster's position is known: the client can resume from here.
					if !write(watchLine{Type: "BOOKMARK", Cursor: cursor()}) {
						return
					}
				}
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
			if rv, err := strconv.ParseUint(l.ResourceVersion, 10, 64); err == nil {
				p := positions[c]
				p.RV = rv
				positions[c] = p
			}
			l.Cursor = cursor()
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
	q.Del("cursor")
	if up.from != "" {
		q.Set("cursor", up.from)
	} else {
		q.Set("initialEvents", "true")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(up.reader.Address, "/")+"/api/v1/watch?"+q.Encode(), nil)
	if err != nil {
		send(upstreamLine{up: up, err: err})
		return
	}
	rt.authorize(req, r, up.reader)
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
	if l.Cursor != "" {
		dst = append(dst, `,"cursor":`...)
		str(l.Cursor)
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
