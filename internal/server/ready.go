package server

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/fleetcache/fleetcache/clusters"
)

// ReadyPolicy says when /readyz answers 200.
type ReadyPolicy struct {
	// Mode is one of:
	//   - "all" (default): every cluster has finished its initial sync, or given up
	//     waiting for it (cluster.initialSyncTimeout), or is Invalid. A cluster that goes
	//     stale later does not make the daemon unready: its answers say so instead.
	//   - "any": at least one cluster is Synced now.
	//   - "quorum": more than half of the clusters are Synced now.
	//   - "atLeast": at least Min clusters are Synced now.
	Mode string `json:"mode,omitempty"`
	Min  int    `json:"min,omitempty"`
}

// ReadyModes lists the valid modes.
var ReadyModes = []string{"all", "any", "quorum", "atLeast"}

func (p ReadyPolicy) String() string {
	if p.Mode == "atLeast" {
		return fmt.Sprintf("atLeast %d synced", p.Min)
	}
	if p.Mode == "" {
		return "all"
	}
	return p.Mode
}

// ready evaluates the policy and returns kube-apiserver style lines for ?verbose.
func ready(p ReadyPolicy, fleet Fleet) (bool, []string) {
	statuses := fleet.Status()
	var lines []string
	synced := 0
	for _, s := range statuses {
		mark := "-"
		if s.Phase == clusters.PhaseSynced {
			synced++
			mark = "+"
		}
		line := fmt.Sprintf("[%s]cluster %s %s", mark, s.Name, s.Phase)
		if s.Message != "" {
			line += ": " + s.Message
		}
		lines = append(lines, line)
	}
	var ok bool
	switch p.Mode {
	case "", "all":
		ok = fleet.Ready()
	case "any":
		ok = synced > 0
	case "quorum":
		ok = synced*2 > len(statuses)
	case "atLeast":
		ok = synced >= p.Min
	}
	return ok, lines
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ok, lines := ready(a.opts.Ready, a.opts.Fleet)
	code, verdict := http.StatusOK, "passed"
	if !ok {
		code, verdict = http.StatusServiceUnavailable, "failed"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	if r.URL.Query().Has("verbose") {
		fmt.Fprintf(w, "%s\nreadyz check %s (policy: %s)\n", strings.Join(lines, "\n"), verdict, a.opts.Ready)
		return
	}
	if ok {
		fmt.Fprintln(w, "ok")
	} else {
		fmt.Fprintf(w, "not ready (policy: %s); see /readyz?verbose\n", a.opts.Ready)
	}
}
