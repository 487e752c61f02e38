package sharding

import (
	"sort"
	"sync"

	"github.com/fleetcache/fleetcache/clusters"
)

// Source is the part of a fleet's clusters this replica owns: the inner source's targets
// filtered by ownership. It remembers every target's name, so that the replica can say
// who owns the clusters it does not cache.
type Source struct {
	Inner clusters.Source
	Owner *Membership

	mu  sync.Mutex
	all []string
	// applied is the membership generation the last Targets call assigned by; -1 before
	// this replica had joined.
	applied int
}

var _ clusters.FileSource = (*Source)(nil)

// Targets implements clusters.Source.
func (s *Source) Targets() ([]clusters.Target, error) {
	ts, err := s.Inner.Targets()
	if err != nil {
		return nil, err
	}
	gen := -1
	if s.Owner.Joined() {
		gen = s.Owner.Stats().Changes
	}
	all := make([]string, 0, len(ts))
	var mine []clusters.Target
	for _, t := range ts {
		all = append(all, t.Name)
		if s.Owner.Owns(t.Name) {
			mine = append(mine, t)
		}
	}
	sort.Strings(all)
	s.mu.Lock()
	s.all, s.applied = all, gen
	s.mu.Unlock()
	return mine, nil
}

// Files implements clusters.FileSource: the inner source's files, if it has any.
func (s *Source) Files() []string {
	if fs, ok := s.Inner.(clusters.FileSource); ok {
		return fs.Files()
	}
	return nil
}

// Current reports whether the clusters last handed out follow the current membership:
// this replica has joined and nothing changed since. Until then it is not ready.
func (s *Source) Current() bool {
	if !s.Owner.Joined() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied == s.Owner.Stats().Changes
}

// Status is the sharding block of /api/v1/clusters.
type Status struct {
	Identity string   `json:"identity"`
	Replicas int      `json:"replicas"`
	Members  []Member `json:"members"`
	// Owners maps every cluster of the fleet to the identities of the replicas that cache
	// it.
	Owners map[string][]string `json:"owners"`
	// Refused are the live Leases of the group that are not members because they do not
	// prove the group key: written by someone else, or by a replica with another key.
	Refused []RefusedLease `json:"refused,omitempty"`
}

// Status returns this replica's view of the group.
func (s *Source) Status() Status {
	st := Status{Identity: s.Owner.Identity(), Replicas: s.Owner.Replicas(), Members: s.Owner.Members(), Owners: map[string][]string{}, Refused: s.Owner.Refused()}
	for c, owners := range Assign(s.All(), st.Members, st.Replicas) {
		ids := make([]string, len(owners))
		for i, o := range owners {
			ids[i] = o.Identity
		}
		st.Owners[c] = ids
	}
	return st
}

// All are the names of every cluster of the fleet, owned here or not, as of the last
// Targets call; sorted.
func (s *Source) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.all...)
}

// Assignment maps every cluster of the fleet to its owners.
func (s *Source) Assignment() map[string][]Member {
	return Assign(s.All(), s.Owner.Members(), s.Owner.Replicas())
}
