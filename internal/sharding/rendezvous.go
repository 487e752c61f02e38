package sharding

import (
	"hash/fnv"
	"sort"
)

// Owners returns the n members with the highest rendezvous weight for cluster, highest
// first: the replicas that cache it. Fewer when there are fewer members.
func Owners(cluster string, members []Member, n int) []Member {
	if n <= 0 || len(members) == 0 {
		return nil
	}
	type scored struct {
		m Member
		w uint64
	}
	all := make([]scored, len(members))
	for i, m := range members {
		all[i] = scored{m, weight(m.Identity, cluster)}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].w != all[j].w {
			return all[i].w > all[j].w
		}
		return all[i].m.Identity < all[j].m.Identity
	})
	if n > len(all) {
		n = len(all)
	}
	out := make([]Member, n)
	for i := range out {
		out[i] = all[i].m
	}
	return out
}

// Assign maps every cluster to its owners.
func Assign(clusters []string, members []Member, n int) map[string][]Member {
	out := make(map[string][]Member, len(clusters))
	for _, c := range clusters {
		out[c] = Owners(c, members, n)
	}
	return out
}

// weight is the rendezvous weight of member for cluster: FNV-1a of both, finished with
// splitmix64's mixer so that names differing in one character spread over the whole range.
// It must never change: replicas of different versions compute it alike.
func weight(member, cluster string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(cluster))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
