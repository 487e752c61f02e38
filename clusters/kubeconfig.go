package clusters

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/fleetcache/fleetcache/internal/glob"
)

// ContextFilter selects and names kubeconfig contexts.
type ContextFilter struct {
	// Include and Exclude are shell globs (*, ?, [a-z]) over context names; * matches '/'
	// too. A context is used when it matches some Include pattern (none given: all) and no
	// Exclude one.
	Include []string `json:"include,omitempty"`
	Exclude []string `json:"exclude,omitempty"`
	// Aliases renames contexts: context name -> cluster name.
	Aliases map[string]string `json:"aliases,omitempty"`
}

// Match reports whether the filter selects the context.
func (f ContextFilter) Match(context string) bool {
	included := len(f.Include) == 0
	for _, p := range f.Include {
		if glob.Match(p, context) {
			included = true
			break
		}
	}
	for _, p := range f.Exclude {
		if glob.Match(p, context) {
			return false
		}
	}
	return included
}

// DefaultKubeconfigPaths is what kubectl reads: $KUBECONFIG's files, or ~/.kube/config.
func DefaultKubeconfigPaths() []string {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if len(rules.Precedence) > 0 {
		return rules.Precedence
	}
	return []string{rules.GetDefaultFilename()}
}

// LoadKubeconfig reads and merges the files as kubectl does (the first file to set a
// value wins) and returns one Target per selected context, sorted by name. A context that
// cannot be turned into a client configuration becomes a Target with Err set, so that it
// is reported rather than dropped. Missing files are an error; so is an empty selection.
func LoadKubeconfig(paths []string, filter ContextFilter) ([]Target, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("kubeconfig: %w", err)
		}
	}
	rules := &clientcmd.ClientConfigLoadingRules{Precedence: paths}
	raw, err := rules.Load()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	var targets []Target
	names := map[string]string{}
	for ctxName := range raw.Contexts {
		if !filter.Match(ctxName) {
			continue
		}
		name := ctxName
		if alias := filter.Aliases[ctxName]; alias != "" {
			name = alias
		}
		if other, dup := names[name]; dup {
			return nil, fmt.Errorf("kubeconfig: contexts %q and %q both map to cluster name %q", other, ctxName, name)
		}
		names[name] = ctxName
		t := Target{Name: name, Context: ctxName}
		if strings.Contains(name, "/") {
			t.Err = fmt.Errorf("context %q: a cluster name cannot contain '/'; give it an alias (contexts.aliases)", ctxName)
		} else {
			t.Config, t.Err = clientConfig(raw, rules, ctxName)
		}
		if t.Err != nil {
			t.Config = &rest.Config{}
		}
		t.Fingerprint = fingerprint(raw, ctxName, t.Err)
		targets = append(targets, t)
	}
	// A kubeconfig with no contexts at all is an empty fleet (e.g. one filled in later);
	// contexts that the filter all leaves out are a mistake.
	if len(targets) == 0 && len(raw.Contexts) > 0 {
		return nil, fmt.Errorf("kubeconfig %v: no context selected (%d contexts, include %v, exclude %v)", paths, len(raw.Contexts), filter.Include, filter.Exclude)
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].Name < targets[j].Name })
	return targets, nil
}

// fingerprint hashes everything in the kubeconfig that determines how the context
// connects: its context, cluster and user entries (with the files they name).
func fingerprint(raw *clientcmdapi.Config, ctxName string, err error) string {
	h := sha256.New()
	c := raw.Contexts[ctxName]
	parts := []any{c}
	if c != nil {
		parts = append(parts, raw.Clusters[c.Cluster], raw.AuthInfos[c.AuthInfo])
		if cl := raw.Clusters[c.Cluster]; cl != nil && cl.CertificateAuthority != "" {
			parts = append(parts, fileDigest(cl.CertificateAuthority))
		}
		if ai := raw.AuthInfos[c.AuthInfo]; ai != nil {
			for _, f := range []string{ai.TokenFile, ai.ClientCertificate, ai.ClientKey} {
				if f != "" {
					parts = append(parts, fileDigest(f))
				}
			}
		}
	}
	if err != nil {
		parts = append(parts, err.Error())
	}
	for _, p := range parts {
		b, _ := json.Marshal(p)
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func fileDigest(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unreadable:" + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// clientConfig builds the context's rest.Config, naming the missing entry when the
// context points at a cluster or user the files do not define.
func clientConfig(raw *clientcmdapi.Config, rules clientcmd.ClientConfigLoader, ctxName string) (*rest.Config, error) {
	ctx := raw.Contexts[ctxName]
	if _, ok := raw.Clusters[ctx.Cluster]; !ok {
		return nil, fmt.Errorf("context %q names cluster %q, which the kubeconfig does not define", ctxName, ctx.Cluster)
	}
	if _, ok := raw.AuthInfos[ctx.AuthInfo]; !ok && ctx.AuthInfo != "" {
		return nil, fmt.Errorf("context %q names user %q, which the kubeconfig does not define", ctxName, ctx.AuthInfo)
	}
	cfg, err := clientcmd.NewNonInteractiveClientConfig(*raw, ctxName, &clientcmd.ConfigOverrides{}, rules).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("context %q: %w", ctxName, err)
	}
	return cfg, nil
}
