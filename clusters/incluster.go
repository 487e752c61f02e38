package clusters

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"

	"k8s.io/client-go/rest"
)

// DefaultServiceAccountDir is where Kubernetes mounts a pod's service account.
const DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// InClusterSource is the cluster fleetcache runs in, reached with the pod's service
// account, as client-go's rest.InClusterConfig reaches it. Dir is configurable (tests,
// unusual mounts); the apiserver address comes from KUBERNETES_SERVICE_HOST/PORT.
type InClusterSource struct {
	Name string // the cluster's name; default "local"
	Dir  string // default DefaultServiceAccountDir
}

// Available reports whether the process runs in a pod with a service account.
func (s InClusterSource) Available() bool {
	_, err := os.Stat(filepath.Join(s.dir(), "token"))
	return err == nil && os.Getenv("KUBERNETES_SERVICE_HOST") != ""
}

func (s InClusterSource) dir() string {
	if s.Dir == "" {
		return DefaultServiceAccountDir
	}
	return s.Dir
}

// Targets implements Source.
func (s InClusterSource) Targets() ([]Target, error) {
	name := s.Name
	if name == "" {
		name = "local"
	}
	t := Target{Name: name, Context: "in-cluster"}
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	token := filepath.Join(s.dir(), "token")
	ca := filepath.Join(s.dir(), "ca.crt")
	switch {
	case host == "" || port == "":
		t.Err = errors.New("in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not running in a pod?)")
	case !exists(token):
		t.Err = fmt.Errorf("in-cluster: no service account token at %s (automountServiceAccountToken off?)", token)
	}
	if t.Err != nil {
		t.Config = &rest.Config{}
	} else {
		// As rest.InClusterConfig, with the folder configurable. The token file is re-read
		// as kubelet rotates it.
		t.Config = &rest.Config{
			Host:            "https://" + net.JoinHostPort(host, port),
			BearerTokenFile: token,
			TLSClientConfig: rest.TLSClientConfig{CAFile: ca},
		}
	}
	t.Fingerprint = fileDigest(ca) + host + port
	return []Target{t}, nil
}

// Files implements the reload watch: a rotated CA restarts the cluster.
func (s InClusterSource) Files() []string { return []string{filepath.Join(s.dir(), "ca.crt")} }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Sources combines sources; cluster names must be unique across them.
type Sources []Source

// Targets implements Source: every source's targets, or the errors of those that fail.
func (ss Sources) Targets() ([]Target, error) {
	var out []Target
	seen := map[string]bool{}
	for _, s := range ss {
		ts, err := s.Targets()
		if err != nil {
			return nil, err
		}
		for _, t := range ts {
			if seen[t.Name] {
				return nil, fmt.Errorf("cluster name %q is used twice (in-cluster name and a kubeconfig context or alias)", t.Name)
			}
			seen[t.Name] = true
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Files implements the reload watch for every source that has files.
func (ss Sources) Files() []string {
	var out []string
	for _, s := range ss {
		if f, ok := s.(FileSource); ok {
			out = append(out, f.Files()...)
		}
	}
	return out
}
