package sharding

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/fleetcache/fleetcache/aggregator"
)

// clusterPosition is where a routed watch's client is in one cluster: the replica whose
// stream it follows, that replica's epoch, and the cluster's position there.
type clusterPosition struct {
	Reader string
	Epoch  string
	RV     uint64
}

// routedCursor is a routed watch's cursor: every cluster's position.
type routedCursor map[string]clusterPosition

// cursorGroup is the encoded form: positions grouped by replica and epoch.
type cursorGroup struct {
	Reader    string            `json:"r"`
	Epoch     string            `json:"e"`
	Positions map[string]uint64 `json:"p"`
}

func encodeRoutedCursor(ps map[string]clusterPosition) string {
	groups := map[string]*cursorGroup{}
	for c, p := range ps {
		k := p.Reader + "\x00" + p.Epoch
		g := groups[k]
		if g == nil {
			g = &cursorGroup{Reader: p.Reader, Epoch: p.Epoch, Positions: map[string]uint64{}}
			groups[k] = g
		}
		g.Positions[c] = p.RV
	}
	out := make([]*cursorGroup, 0, len(groups))
	for _, g := range groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Reader+out[i].Epoch < out[j].Reader+out[j].Epoch })
	return encodeRouted(out)
}

var errNotRoutedCursor = errors.New("not a cursor a sharded replica issues: a watch through a replica resumes only from the cursors it sent; list again and watch from now")

func parseRoutedCursor(s string) (routedCursor, error) {
	var groups []cursorGroup
	if err := decodeRouted(s, &groups); err != nil {
		return nil, errNotRoutedCursor
	}
	rc := routedCursor{}
	for _, g := range groups {
		for c, rv := range g.Positions {
			rc[c] = clusterPosition{Reader: g.Reader, Epoch: g.Epoch, RV: rv}
		}
	}
	return rc, nil
}

func (rc routedCursor) find(cluster string) (clusterPosition, bool) {
	p, ok := rc[cluster]
	return p, ok
}

// check reports why the stream cannot resume: a selected cluster of the cursor whose
// replica no longer caches it (the new one cannot know what the client had).
func (rc routedCursor) check(rt *Router, cands map[string][]Member) error {
	for c, p := range rc {
		owners, ok := cands[c]
		if !ok {
			continue // no longer selected (or no replica owns it): nothing to resume there
		}
		if !isOwner(owners, p.Reader) {
			return fmt.Errorf("%w: cluster %s is cached by %s now, not by replica %s, which the cursor follows; list again", aggregator.ErrExpired, c, owners[0].Identity, p.Reader)
		}
	}
	return nil
}

func isOwner(owners []Member, identity string) bool {
	for _, o := range owners {
		if o.Identity == identity {
			return true
		}
	}
	return false
}

// resumePart is one replica's part of a resumed stream: its clusters and the cursor of
// its own to resume them from.
type resumePart struct {
	member   Member
	clusters []string
	cursor   string
}

// byReader groups the cursor's selected clusters by the replica that issued their
// positions (check has made sure it still caches them).
func (rc routedCursor) byReader(cands map[string][]Member) []resumePart {
	type key struct{ reader, epoch string }
	parts := map[key]*resumePart{}
	pos := map[key]aggregator.Cursor{}
	for c, p := range rc {
		owners, ok := cands[c]
		if !ok {
			continue
		}
		k := key{p.Reader, p.Epoch}
		if parts[k] == nil {
			for _, o := range owners {
				if o.Identity == p.Reader {
					parts[k] = &resumePart{member: o}
				}
			}
			pos[k] = aggregator.Cursor{}
		}
		parts[k].clusters = append(parts[k].clusters, c)
		pos[k][c] = p.RV
	}
	out := make([]resumePart, 0, len(parts))
	for k, p := range parts {
		sort.Strings(p.clusters)
		p.cursor = pos[k].EncodeFor(k.epoch)
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].member.Identity < out[j].member.Identity })
	return out
}

// unknownOf returns the first of clusters whose client state is unknown ("" if none).
func unknownOf(clusters []string, unknown map[string]bool) string {
	for _, c := range clusters {
		if unknown[c] {
			return c
		}
	}
	return ""
}

// expired is the ERROR line that ends a resumed stream whose cluster moved.
func expired(cluster string) watchLine {
	raw, _ := json.Marshal(map[string]any{"code": http.StatusGone, "reason": "Expired",
		"message": fmt.Sprintf("cluster %s moved to another replica, which cannot know what this stream (resumed from a cursor) had sent; list again", cluster)})
	return watchLine{Type: "ERROR", Error: raw}
}
