package server

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/fleetcache/fleetcache/internal/request"
)

// loopbackPeer reports whether the request came from this machine.
func loopbackPeer(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ReadyPolicy says when /readyz answers 200. Whatever the mode, the daemon is not ready
// before its cluster source has been read, nor with no clusters unless AllowEmpty.
type ReadyPolicy struct {
	// Mode is one of:
	//   - "all" (default): every cluster has finished its initial sync, or given up
	//     waiting for it (cluster.initialSyncTimeout), or is Invalid; and at least one
	//     cluster has synced. A cluster that goes stale later does not make the daemon
	//     unready: its answers say so instead.
	//   - "any": at least one cluster is Synced now.
	//   - "quorum": more than half of the clusters are Synced now.
	//   - "atLeast": at least Min clusters are Synced now.
	Mode string `json:"mode,omitempty"`
	Min  int    `json:"min,omitempty"`
	// AllowEmpty makes a fleet with no clusters ready (e.g. a daemon whose kubeconfig is
	// filled in later).
	AllowEmpty bool `json:"allowEmpty,omitempty"`
}

func (p ReadyPolicy) String() string {
	if p.Mode == "atLeast" {
		return fmt.Sprintf("atLeast %d synced", p.Min)
	}
	if p.Mode == "" {
		return "all"
	}
	return p.Mode
}

// ready evaluates the policy and returns kube-apiserver style lines for ?verbose: one
// per cluster for which sees is true (nil: every cluster), then a count of the others.
func ready(p ReadyPolicy, fleet Fleet, sees func(cluster string) bool) (bool, []string) {
	if !fleet.Loaded() {
		msg := "[-]clusters not loaded yet"
		// The load error names kubeconfig files and contexts: for the whole view only.
		if err := fleet.LoadError(); err != nil && sees == nil {
			msg += ": " + err.Error()
		}
		return false, []string{msg}
	}
	clusters := fleet.Readiness()
	if len(clusters) == 0 {
		if p.AllowEmpty {
			return true, []string{"[+]no clusters (readiness.allowEmpty)"}
		}
		return false, []string{"[-]no clusters: the source lists none (set readiness.allowEmpty to be ready anyway)"}
	}
	var lines []string
	synced, everSynced, settled, hidden := 0, 0, 0, 0
	for _, c := range clusters {
		mark := "-"
		if c.Synced {
			synced++
			mark = "+"
		}
		if c.EverSynced {
			everSynced++
		}
		if c.Settled {
			settled++
		}
		if sees != nil && !sees(c.Name) {
			hidden++
			continue
		}
		line := fmt.Sprintf("[%s]cluster %s %s", mark, c.Name, c.Phase)
		if c.Message != "" {
			line += ": " + c.Message
		}
		lines = append(lines, line)
	}
	if hidden > 0 {
		lines = append(lines, fmt.Sprintf("[ ]%d clusters not shown (the caller may not see them)", hidden))
	}
	var ok bool
	switch p.Mode {
	case "", "all":
		ok = settled == len(clusters) && everSynced > 0
	case "any":
		ok = synced > 0
	case "quorum":
		ok = synced*2 > len(clusters)
	case "atLeast":
		ok = synced >= p.Min
	}
	return ok, lines
}

// readyz answers probes with a bare status. ?verbose names clusters and their errors
// (apiserver URLs, kubeconfig problems), so the guard authenticates it as any API
// route, and the lines cover the clusters the caller may see, as /api/v1/clusters does.
// Without authentication, only a caller on loopback gets the names.
func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	sees := func(string) bool { return false }
	switch sc := request.Scope(r); {
	case sc != nil:
		sees = sc.SeesCluster
	case a.opts.Authenticator != nil || loopbackPeer(r):
		sees = nil
	}
	ok, lines := ready(a.opts.Ready, a.opts.Fleet, sees)
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
