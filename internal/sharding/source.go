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
}

var _ clusters.FileSource = (*Source)(nil)

// Targets implements clusters.Source.
func (s *Source) Targets() ([]clusters.Target, error) {
	ts, err := s.Inner.Targets()
	if err != nil {
		return nil, err
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
	s.all = all
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
