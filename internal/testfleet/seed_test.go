package testfleet

import (
	"reflect"
	"testing"
)

func TestPlanIsDeterministicAndDiffersPerCluster(t *testing.T) {
	a1, a2 := PlanFor("alpha", 0, SeedOptions{}), PlanFor("alpha", 0, SeedOptions{})
	if !reflect.DeepEqual(a1, a2) {
		t.Fatal("two plans for the same cluster differ")
	}
	want := map[string]map[string]int{
		"alpha":   {"namespaces": 3, "nodes": 2, "deployments": 6, "pods": 12, "secrets": 3, "widgets": 6},
		"bravo":   {"namespaces": 4, "nodes": 3, "deployments": 8, "pods": 17, "secrets": 4, "widgets": 0},
		"charlie": {"namespaces": 5, "nodes": 4, "deployments": 10, "pods": 19, "secrets": 5, "widgets": 10},
	}
	for i, name := range []string{"alpha", "bravo", "charlie"} {
		p := PlanFor(name, i, SeedOptions{})
		for res, n := range want[name] {
			if got := p.Count(res); got != n {
				t.Errorf("%s: %d %s, want %d", name, got, res, n)
			}
		}
		phases := p.PodsInPhase("Running") + p.PodsInPhase("Pending") + p.PodsInPhase("Succeeded") + p.PodsInPhase("Failed")
		if phases != p.Count("pods") || p.PodsInPhase("Failed") == 0 || p.PodsInPhase("Succeeded") == 0 {
			t.Errorf("%s: pod phases do not cover every phase: %d of %d pods", name, phases, p.Count("pods"))
		}
	}
}

func TestPlanPodsKnob(t *testing.T) {
	for _, n := range []int{1, 7, 10000} {
		p := PlanFor("bravo", 1, SeedOptions{Pods: n})
		if got := p.Count("pods"); got != n {
			t.Errorf("--pods %d: plan has %d pods", n, got)
		}
		names := map[string]bool{}
		for _, pod := range p.Pods {
			key := pod.Namespace + "/" + pod.Name
			if names[key] {
				t.Fatalf("--pods %d: duplicate pod name %s", n, key)
			}
			names[key] = true
		}
	}
}
