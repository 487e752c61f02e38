package clusters

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
)

// ErrOpenAPIPath means a path that names no OpenAPI v3 document: nothing but the root,
// api/<version> and apis/<group>/<version> is ever asked of a member apiserver.
var ErrOpenAPIPath = errors.New("not an OpenAPI v3 document path (allowed: the root, api/<version>, apis/<group>/<version>)")

// OpenAPIPath validates the part of a request's path below /openapi/v3 and returns it
// in its one canonical spelling: "" (the root), "api/<version>" or
// "apis/<group>/<version>", the group a DNS subdomain and the version a DNS label. Dot
// segments, empty segments, encoded or doubled slashes and anything else are refused:
// this path is joined onto a member apiserver's URL and sent with fleetcache's own
// credentials, so only the documents kubectl explain reads may leave.
func OpenAPIPath(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	parts := strings.Split(path, "/")
	switch {
	case len(parts) == 2 && parts[0] == "api" && isLabel(parts[1]):
	case len(parts) == 3 && parts[0] == "apis" && isSubdomain(parts[1]) && isLabel(parts[2]):
	default:
		return "", ErrOpenAPIPath
	}
	return strings.Join(parts, "/"), nil
}

func isLabel(s string) bool     { return len(validation.IsDNS1123Label(s)) == 0 }
func isSubdomain(s string) bool { return len(validation.IsDNS1123Subdomain(s)) == 0 }

// openAPIQuery keeps of a caller's query only what an OpenAPI document request means:
// hash, the content hash the root names (hex), which makes the answer cacheable.
func openAPIQuery(rawQuery string) string {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return ""
	}
	h := q.Get("hash")
	if h == "" || len(h) > 256 || strings.Trim(h, "0123456789abcdefABCDEF") != "" {
		return ""
	}
	return url.Values{"hash": {h}}.Encode()
}

// openAPIAccept keeps of a caller's Accept header only the media types an OpenAPI v3
// document is served in; anything else asks for JSON.
func openAPIAccept(accept string) string {
	var keep []string
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "application/json", "application/com.github.proto-openapi.spec.v3.v1.0+protobuf", "*/*":
			keep = append(keep, mt)
		}
	}
	if len(keep) == 0 {
		return "application/json"
	}
	return strings.Join(keep, ", ")
}

// OpenAPIV3 asks the cluster's apiserver for an OpenAPI v3 document, through the
// cluster's own connection and credentials (see NewOpenAPIRequest for what may be
// asked). The caller closes the body. kubectl explain reads these; fleetcache caches no
// schema, so each request is the apiserver's answer.
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
	base, _, err := rest.DefaultServerUrlFor(c.target.Config)
	if err != nil {
		return nil, err
	}
	req, err := NewOpenAPIRequest(ctx, base, path, rawQuery, accept)
	if err != nil {
		return nil, err
	}
	return conn.Do(req)
}

// NewOpenAPIRequest builds the request for an OpenAPI v3 document of the apiserver at
// base from validated parts only: the document's path in its canonical spelling
// (OpenAPIPath: the root, api/<version> or apis/<group>/<version>), of the caller's query
// only a hex hash, of its Accept only the document's media types. The URL is checked
// again once built: its path must be exactly base's followed by /openapi/v3[/<doc>], with
// no escaping a server could read otherwise. This is the one place a caller's words
// reach a member apiserver's URL.
func NewOpenAPIRequest(ctx context.Context, base *url.URL, path, rawQuery, accept string) (*http.Request, error) {
	doc, err := OpenAPIPath(path)
	if err != nil {
		return nil, err
	}
	want := strings.TrimSuffix(base.Path, "/") + "/openapi/v3"
	if doc != "" {
		want += "/" + doc
	}
	if !strings.HasPrefix(want, "/") {
		want = "/" + want
	}
	u := *base
	u.Path, u.RawPath, u.Fragment, u.RawFragment = want, "", "", ""
	if u.EscapedPath() != want {
		return nil, fmt.Errorf("refusing to send %q: it is not the OpenAPI document %q", u.Redacted(), want)
	}
	u.RawQuery = openAPIQuery(rawQuery)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", openAPIAccept(accept))
	return req, nil
}
