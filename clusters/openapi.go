package clusters

import (
	"context"
	"errors"
	"net/http"

	"k8s.io/client-go/rest"
)

// OpenAPIV3 asks the cluster's apiserver for an OpenAPI v3 document, through the
// cluster's own connection and credentials: the root ("", which lists the group
// versions) or a group version ("api/v1", "apis/apps/v1"), with rawQuery (the hash the
// root names) and accept passed on. The caller closes the body. kubectl explain reads
// these; fleetcache caches no schema, so each request is the apiserver's answer.
func (f *Fleet) OpenAPIV3(ctx context.Context, cluster, path, rawQuery, accept string) (*http.Response, error) {
	c := f.Cluster(cluster)
	if c == nil {
		return nil, errors.New("no such cluster")
	}
	conn := c.schemaConn.Load()
	if conn == nil {
		return nil, errors.New("not connected yet")
	}
	// The server URL as client-go reads a kubeconfig's (a host without a scheme, a path
	// prefix of a proxy in front of the apiserver).
	u, _, err := rest.DefaultServerUrlFor(c.target.Config)
	if err != nil {
		return nil, err
	}
	u = u.JoinPath("openapi", "v3", path)
	u.RawQuery = rawQuery
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	return conn.Do(req)
}
