package server

import (
	"errors"
	"strings"
	"testing"

	"github.com/fleetcache/fleetcache/clusters"
)

// fakeFleet answers readiness questions from fixed values.
type fakeFleet struct {
	loaded  bool
	loadErr error
	ready   []clusters.Readiness
}

func (f fakeFleet) Status() []clusters.ClusterStatus { return nil }
func (f fakeFleet) Readiness() []clusters.Readiness  { return f.ready }
func (f fakeFleet) Loaded() bool                     { return f.loaded }
func (f fakeFleet) LoadError() error                 { return f.loadErr }

func cluster(name string, synced, ever, settled bool) clusters.Readiness {
	phase := clusters.PhaseSyncing
	if synced {
		phase = clusters.PhaseSynced
	}
	return clusters.Readiness{Name: name, Condition: clusters.Condition{Phase: phase}, Synced: synced, EverSynced: ever, Settled: settled}
}

func TestReadinessMeansData(t *testing.T) {
	synced := cluster("a", true, true, true)
	gaveUp := cluster("b", false, false, true) // initialSyncTimeout passed, never synced
	syncing := cluster("c", false, false, false)
	lost := cluster("d", false, true, true) // synced once, unreachable now
	for _, tc := range []struct {
		name   string
		policy ReadyPolicy
		fleet  fakeFleet
		want   bool
		line   string
	}{
		{"source not read yet", ReadyPolicy{}, fakeFleet{}, false, "not loaded yet"},
		{"source failed to load", ReadyPolicy{}, fakeFleet{loadErr: errors.New("no such file")}, false, "no such file"},
		{"no clusters", ReadyPolicy{}, fakeFleet{loaded: true}, false, "no clusters"},
		{"no clusters, allowed", ReadyPolicy{AllowEmpty: true}, fakeFleet{loaded: true}, true, "allowEmpty"},
		{"all: one still syncing", ReadyPolicy{}, fakeFleet{loaded: true, ready: []clusters.Readiness{synced, syncing}}, false, "[-]cluster c"},
		{"all: settled, one synced", ReadyPolicy{}, fakeFleet{loaded: true, ready: []clusters.Readiness{synced, gaveUp}}, true, "[+]cluster a"},
		{"all: settled, none ever synced", ReadyPolicy{}, fakeFleet{loaded: true, ready: []clusters.Readiness{gaveUp}}, false, "[-]cluster b"},
		{"all: synced once, stale now", ReadyPolicy{Mode: "all"}, fakeFleet{loaded: true, ready: []clusters.Readiness{lost}}, true, "[-]cluster d"},
		{"any", ReadyPolicy{Mode: "any"}, fakeFleet{loaded: true, ready: []clusters.Readiness{lost, synced}}, true, "[+]cluster a"},
		{"any: none synced now", ReadyPolicy{Mode: "any"}, fakeFleet{loaded: true, ready: []clusters.Readiness{lost}}, false, "[-]cluster d"},
		{"quorum: 1 of 2", ReadyPolicy{Mode: "quorum"}, fakeFleet{loaded: true, ready: []clusters.Readiness{synced, lost}}, false, ""},
		{"atLeast 1", ReadyPolicy{Mode: "atLeast", Min: 1}, fakeFleet{loaded: true, ready: []clusters.Readiness{synced, lost}}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, lines := ready(tc.policy, tc.fleet, nil)
			if got != tc.want {
				t.Errorf("ready = %v, want %v (%v)", got, tc.want, lines)
			}
			if !strings.Contains(strings.Join(lines, "\n"), tc.line) {
				t.Errorf("lines %q do not say %q", lines, tc.line)
			}
		})
	}
}
