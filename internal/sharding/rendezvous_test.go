package sharding

import (
	"fmt"
	"testing"
)

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

func members(ids ...string) []Member {
	out := make([]Member, len(ids))
	for i, id := range ids {
		out[i] = Member{Identity: id, Address: "http://" + id}
	}
	return out
}

// moved counts the copies of clusters that changed replica between two assignments: a
// cluster whose second owner changed is one copy moved (one cold list somewhere).
func moved(a, b map[string][]Member) int {
	n := 0
	for c, after := range b {
		for _, o := range after {
			found := false
			for _, p := range a[c] {
				found = found || p.Identity == o.Identity
			}
			if !found {
				n++
			}
		}
	}
	return n
}

func TestAddingAReplicaMovesAboutAQuarter(t *testing.T) {
	clusters := names("ctx", 1000)
	three := members("fleetcache-0", "fleetcache-1", "fleetcache-2")
	four := members("fleetcache-0", "fleetcache-1", "fleetcache-2", "fleetcache-3")
	for _, n := range []int{1, 2} {
		before, after := Assign(clusters, three, n), Assign(clusters, four, n)
		// Every moved cluster moved to the new replica (with n=2: the new replica took one
		// of its two places), and no more than the newcomer's fair share moved.
		for c, owners := range after {
			if fmt.Sprint(owners) != fmt.Sprint(before[c]) {
				took := false
				for _, o := range owners {
					took = took || o.Identity == "fleetcache-3"
				}
				if !took {
					t.Errorf("replicas=%d: %s moved from %v to %v without the new replica", n, c, before[c], owners)
				}
			}
		}
		got := moved(before, after)
		limit := len(clusters) * n * 35 / 100 // 1/4 + 10% of the copies
		if got > limit {
			t.Errorf("replicas=%d: adding a fourth replica moved %d of %d cluster copies, want <= %d", n, got, len(clusters)*n, limit)
		}
		t.Logf("replicas=%d: adding a fourth replica moved %d of %d cluster copies (%.1f%%)", n, got, len(clusters)*n, 100*float64(got)/float64(len(clusters)*n))
		if got == 0 {
			t.Errorf("replicas=%d: the new replica got nothing", n)
		}
	}
}

func TestRemovingAClusterMovesNoOther(t *testing.T) {
	m := members("a", "b", "c")
	all := names("ctx", 200)
	before := Assign(all, m, 2)
	after := Assign(all[1:], m, 2)
	for c, owners := range after {
		if fmt.Sprint(owners) != fmt.Sprint(before[c]) {
			t.Errorf("%s moved from %v to %v when another cluster was removed", c, before[c], owners)
		}
	}
}

func TestLosingAReplicaMovesOnlyItsClusters(t *testing.T) {
	all := names("ctx", 300)
	before := Assign(all, members("a", "b", "c"), 1)
	after := Assign(all, members("a", "c"), 1)
	for c, owners := range after {
		if before[c][0].Identity != "b" && owners[0] != before[c][0] {
			t.Errorf("%s moved from %v to %v though its owner stayed", c, before[c], owners)
		}
	}
}

func TestOwnersAreDistinctAndBalanced(t *testing.T) {
	m := members("a", "b", "c")
	count := map[string]int{}
	for _, c := range names("ctx", 3000) {
		o := Owners(c, m, 2)
		if len(o) != 2 || o[0].Identity == o[1].Identity {
			t.Fatalf("%s: owners %v, want two distinct", c, o)
		}
		for _, x := range o {
			count[x.Identity]++
		}
	}
	for id, n := range count {
		// Each replica holds 2/3 of 3000 = 2000 places; allow 10% either way.
		if n < 1800 || n > 2200 {
			t.Errorf("replica %s holds %d places, want about 2000 (%v)", id, n, count)
		}
	}
	if got := Owners("x", m, 5); len(got) != 3 {
		t.Errorf("5 owners of 3 members: %v", got)
	}
	if got := Owners("x", nil, 1); got != nil {
		t.Errorf("owners without members: %v", got)
	}
}
