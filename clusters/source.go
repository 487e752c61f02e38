package clusters

import "k8s.io/client-go/rest"

// Target is one cluster to cache: a name and how to reach it.
type Target struct {
	// Name identifies the cluster in keys, metrics and the API: the context's alias, or
	// its name.
	Name    string
	Context string
	Config  *rest.Config
	// Fingerprint changes when anything that affects the connection changes (server,
	// CA, credentials); a changed target is restarted, an unchanged one left alone.
	Fingerprint string
	// Err, when set, says why the context cannot be used; the cluster is reported Invalid.
	Err error
}

// Source lists the clusters to cache; it is asked again on every reload.
type Source interface {
	Targets() ([]Target, error)
}

// FileSource is a Source read from files: the fleet reloads it when they change.
type FileSource interface {
	Source
	Files() []string
}

// KubeconfigSource reads targets from kubeconfig files.
type KubeconfigSource struct {
	Paths  []string
	Filter ContextFilter
}

// Targets implements Source.
func (s KubeconfigSource) Targets() ([]Target, error) { return LoadKubeconfig(s.Paths, s.Filter) }

// Files are the files whose change triggers a reload.
func (s KubeconfigSource) Files() []string { return s.Paths }
