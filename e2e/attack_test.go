package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetcache/fleetcache/internal/fixtures"
)

// memberRecorder is a reverse proxy in front of a real apiserver that remembers every
// request fleetcache sends it, as the apiserver received it.
type memberRecorder struct {
	mu   sync.Mutex
	seen []string
}

func (m *memberRecorder) take() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.seen
	m.seen = nil
	return out
}

// recordedMember starts the proxy for the cluster and returns its URL.
// It adds the member's credentials itself (token), as a proxy in front of an
// apiserver may.
func recordedMember(t *testing.T, server string, ca []byte, token string) (*memberRecorder, string) {
	t.Helper()
	target, _ := url.Parse(server)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	proxy.FlushInterval = -1 // watches stream
	rec := &memberRecorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.seen = append(rec.seen, r.RequestURI)
		rec.mu.Unlock()
		r.Header.Set("Authorization", "Bearer "+token)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return rec, srv.URL
}

// sendRaw sends target exactly as written (curl --path-as-is) and returns the status and
// body.
func sendRaw(t *testing.T, base, target string) (int, string) {
	t.Helper()
	u, _ := url.Parse(base)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, u.Host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %q: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// fetch GETs url with headers (name, value pairs) and returns the status and the body.
func fetch(t testing.TB, url string, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// fleetcacheTraffic is what fleetcache itself asks a member for (discovery, lists,
// watches and probes of the cached resources) and the OpenAPI documents explain reads.
// OpenAPI documents carry at most a hex hash from the caller.
var fleetcacheTraffic = regexp.MustCompile(`^(/(version|api|apis|api/v1|apis/[a-z0-9.-]+/[a-z0-9]+|api/v1/(pods|configmaps))(\?[^;\\]*)?|/openapi/v3(/api/v1|/apis/[a-z0-9.-]+/[a-z0-9]+)?(\?hash=[0-9A-Fa-f]+)?)$`)

// #24's attack on a daemon of a real cluster, with the credentials of the cluster's
// admin: no crafted path, on either face, makes fleetcache send the member anything but
// its own traffic and the allowed OpenAPI documents, and no answer carries the value of
// a Secret (fleetcache here caches no Secrets at all; the escape read them live).
func TestCraftedPathsNeverReachTheMember(t *testing.T) {
	d := startDaemon(t)
	c := fleet.Clusters[0]
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.AdminConfig())
	canary := fmt.Sprintf("canary-%d", time.Now().UnixNano())
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "attack-canary", Namespace: "default"}, StringData: map[string]string{"password": canary}}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Secrets("default").Delete(ctx, sec.Name, metav1.DeleteOptions{}) })

	rec, member := recordedMember(t, c.Server(), c.CAData(), c.AdminToken())
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: m, cluster: {server: %q}}]
users: [{name: admin, user: {}}]
contexts: [{name: %s, context: {cluster: m, user: admin}}]
`, member, c.Name)), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("kubeconfig: [%s]\nresources: [{name: pods}, {name: configmaps}]\n", kubeconfig)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, d.bin, nil, "--config", config)

	leaked := func(body string) bool {
		return strings.Contains(body, canary) || strings.Contains(body, base64.StdEncoding.EncodeToString([]byte(canary)))
	}
	// The attack of the issue, verbatim, first.
	targets := []string{"/clusters/" + c.Name + "/openapi/v3/%2e%2e/%2e%2e/api/v1/secrets"}
	for _, s := range fixtures.CraftedOpenAPIPaths {
		targets = append(targets, "/fleet/"+s, "/clusters/"+c.Name+"/"+s)
	}
	for _, target := range targets {
		code, body := sendRaw(t, p.url, target)
		if leaked(body) {
			t.Errorf("GET %s: %d, and the answer carries the Secret's value", target, code)
		}
		if (code < 400 || code > 499) && !strings.Contains(target, "?") {
			t.Errorf("GET %s: %d, want a 4xx\n%.300s", target, code, body)
		}
	}
	// What explain reads still works, from the member itself.
	if code, body := sendRaw(t, p.url, "/clusters/"+c.Name+"/openapi/v3/api/v1"); code != http.StatusOK || !strings.Contains(body, `"io.k8s.api.core.v1.Pod"`) {
		t.Errorf("the core OpenAPI document: %d\n%.300s", code, body)
	}
	for _, sent := range rec.take() {
		if !fleetcacheTraffic.MatchString(sent) {
			t.Errorf("fleetcache sent the member %s", sent)
		}
	}
}

// Requests are bounded as kube-apiserver bounds them: a URL over 16 KiB is 414, headers
// over 256 KiB are 431, and a client that sends its headers too slowly is disconnected
// instead of holding a connection.
func TestRequestBounds(t *testing.T) {
	d := startDaemon(t)
	if code, body := sendRaw(t, d.url, "/fleet/api/v1/pods?labelSelector="+strings.Repeat("a", 17<<10)); code != http.StatusRequestURITooLong {
		t.Errorf("a 17 KiB URL: %d, want 414\n%.200s", code, body)
	}
	u, _ := url.Parse(d.url)
	send := func(head string) (*http.Response, error) {
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := io.WriteString(conn, head); err != nil {
			return nil, err
		}
		return http.ReadResponse(bufio.NewReader(conn), nil)
	}
	big := "GET /api/v1/clusters HTTP/1.1\r\nHost: x\r\n"
	for i := 0; i < 40; i++ {
		big += fmt.Sprintf("X-Pad-%d: %s\r\n", i, strings.Repeat("p", 8<<10)) // 320 KiB in all
	}
	resp, err := send(big + "\r\n")
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("320 KiB of headers: %v %v, want 431", resp, err)
	}
	// Half a request, then silence: the server ends it (the header read timeout), so the
	// read ends with the connection closed, long before the client's own deadline.
	start := time.Now()
	resp, err = send("GET /healthz HTTP/1.1\r\nHost: x\r\n")
	var ne net.Error
	switch {
	case err == nil && resp.StatusCode != http.StatusRequestTimeout:
		t.Errorf("a client that never finishes its headers got %d", resp.StatusCode)
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("a client that never finishes its headers was still connected after %s", time.Since(start).Round(time.Second))
	}
}
