package sharding

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fleetcache/fleetcache/internal/wire"
)

// kubeEvent is a Kubernetes watch event as a replica sends it (JSON).
type kubeEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

type readerEvent struct {
	part int
	ev   kubeEvent
	err  error // the reader's stream ended
}

// fleetWatch fans the readers' watches into one Kubernetes watch stream. Each event's
// resourceVersion becomes the router's (every reader's position), so a client resumes
// the whole stream from any event; see fleet.go for what moves end it.
func (rt *Router) fleetWatch(w http.ResponseWriter, r *http.Request, local http.Handler) {
	q := r.URL.Query()
	var from version
	resume := ""
	if rv := q.Get("resourceVersion"); rv != "" && rv != "0" {
		v, err := parseVersion(rv)
		if err != nil {
			watchGone(w, fmt.Sprintf("resourceVersion %q was not issued by a sharded replica of this fleet (%v); list again", rv, err))
			return
		}
		from, resume = v, rv
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(rt.streams(), cancel) // shutdown ends routed streams too
	defer stop()
	owners := rt.ownerSnapshot(r)
	// Bookmarks keep every reader's position known, so the stream can be resumed from
	// any event.
	params := url.Values{"allowWatchBookmarks": {"true"}}
	fs, missing := rt.openAll(ctx, r, local, func(rd *reader) string {
		p := url.Values{}
		for k, v := range params {
			p[k] = v
		}
		if from != nil {
			p.Set("resourceVersion", from[rd.member.Identity].RV)
		}
		return readerQuery(r, rd, p)
	})
	defer closeAll(fs)
	if f := clientErrorOf(&fs); f != nil {
		forward(w, f)
		return
	}
	if len(fs) == 0 {
		if len(missing) == 0 {
			local.ServeHTTP(w, r) // no cluster selected: the local (empty) stream
			return
		}
		writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable", "no replica answered for any selected cluster")
		return
	}
	if from != nil {
		readers := make([]*reader, len(fs))
		for i, f := range fs {
			readers[i] = f.rd
		}
		// The same replicas answer for the same clusters (those nobody answers for were
		// missing when the resourceVersion was issued too).
		if !from.matches(readers) {
			watchGone(w, fmt.Sprintf("resourceVersion %s: clusters moved between replicas since it was issued; list again", shorten(resume)))
			return
		}
	}
	partialWarning(w, missing)
	for _, f := range fs {
		for _, v := range f.resp.Header.Values("Warning") {
			w.Header().Add("Warning", v) // a replica's own partial clusters
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()

	events := make(chan readerEvent)
	for i, f := range fs {
		go func() {
			dec := json.NewDecoder(f.resp.Body)
			for {
				var ev kubeEvent
				err := dec.Decode(&ev)
				select {
				case events <- readerEvent{part: i, ev: ev, err: err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	positions := make([]string, len(fs))
	if from != nil {
		for i, f := range fs {
			positions[i] = from[f.rd.member.Identity].RV
		}
	}
	current := func() string {
		v := version{}
		for i, f := range fs {
			v[f.rd.member.Identity] = readerVersion{RV: positions[i], Clusters: clusterDigest(f.rd.clusters)}
		}
		return v.encode()
	}
	initial := q.Get("sendInitialEvents") == "true"
	ended := make([]bool, len(fs))
	endedAll := func() bool {
		for _, e := range ended {
			if !e {
				return false
			}
		}
		return true
	}
	clientBookmarks := q.Get("allowWatchBookmarks") == "true"
	type heldEvent struct {
		part int
		ev   kubeEvent
		rv   string
	}
	var held []heldEvent
	write := func(typ string, obj json.RawMessage, old string) bool {
		if old != "" {
			obj = replaceVersion(obj, old, current())
		}
		line := append([]byte(`{"type":`), strconv.Quote(typ)...)
		line = append(append(append(line, `,"object":`...), obj...), "}\n"...)
		_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		if _, err := w.Write(line); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	poll := time.NewTicker(watchMembershipPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			if rt.ownerSnapshot(r) != owners {
				write("ERROR", expiredStatus("the fleet's replicas changed and clusters of this watch moved between them; list again"), "")
				return
			}
		case re := <-events:
			if re.err != nil {
				return // a reader's stream ended (its timeout, or the replica went away): the client watches again from its position
			}
			ev := re.ev
			if ev.Type == "ERROR" {
				write(ev.Type, ev.Object, "")
				return
			}
			var meta struct {
				Metadata struct {
					ResourceVersion string            `json:"resourceVersion"`
					Annotations     map[string]string `json:"annotations"`
				} `json:"metadata"`
			}
			_ = json.Unmarshal(ev.Object, &meta)
			rv := meta.Metadata.ResourceVersion
			switch {
			case initial && ended[re.part] && !endedAll():
				// A change after this reader's initial events, while others' are still
				// coming: it follows the bookmark that closes them all, as on one daemon.
				held = append(held, heldEvent{part: re.part, ev: ev, rv: rv})
				continue
			case rv != "":
				positions[re.part] = rv
			}
			if ev.Type != "BOOKMARK" {
				if !write(ev.Type, ev.Object, rv) {
					return
				}
				continue
			}
			if meta.Metadata.Annotations[metav1.InitialEventsAnnotationKey] == "true" {
				ended[re.part] = true
				if !endedAll() {
					continue
				}
				if !write(ev.Type, ev.Object, rv) {
					return
				}
				for _, h := range held {
					if h.rv != "" {
						positions[h.part] = h.rv
					}
					if h.ev.Type == "BOOKMARK" && !clientBookmarks {
						continue
					}
					if !write(h.ev.Type, h.ev.Object, h.rv) {
						return
					}
				}
				held = nil
				continue
			}
			if clientBookmarks && (!initial || endedAll()) && !write(ev.Type, ev.Object, rv) {
				return
			}
		}
	}
}

// ownerSnapshot is which replicas own each cluster the request selects, as one string:
// a watch ends when it changes.
func (rt *Router) ownerSnapshot(r *http.Request) string {
	cands, orphans := rt.candidates(r)
	var b strings.Builder
	for _, c := range rt.Source.All() {
		owners, ok := cands[c]
		if !ok {
			continue
		}
		b.WriteString(c)
		for _, o := range owners {
			b.WriteByte(' ')
			b.WriteString(o.Identity)
		}
		b.WriteByte('\n')
	}
	b.WriteString(strings.Join(orphans, " "))
	return b.String()
}

// replaceVersion puts the router's resourceVersion in place of a reader's in an event's
// object (a reader's resourceVersion is unique enough not to occur elsewhere in it).
func replaceVersion(obj json.RawMessage, old, now string) json.RawMessage {
	return bytes.ReplaceAll(obj, wire.AppendString(nil, old), wire.AppendString(nil, now))
}

// watchGone answers a watch that cannot start where it asks with 410 Expired, as
// kube-apiserver does: a stream whose only event is the ERROR.
func watchGone(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(append([]byte(`{"type":"ERROR","object":`), expiredStatus(msg)...), "}\n"...))
}

// expiredStatus is the Status of a 410 Expired watch event.
func expiredStatus(msg string) json.RawMessage {
	raw, _ := json.Marshal(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
		Code: http.StatusGone, Reason: metav1.StatusReasonExpired, Message: msg})
	return raw
}

func shorten(s string) string {
	if len(s) > 24 {
		return s[:24] + "..."
	}
	return s
}
