package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetcache/fleetcache/internal/testfleet"
)

const (
	adminToken   = "admin-token-0123456789abcdef"
	alphaToken   = "alpha-token-0123456789abcdef"
	paymentToken = "payments-token-0123456789abc"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// securedDaemon runs fleetcache with a token file: an admin, a user limited to the first
// cluster, and a user limited to the payments namespace.
func securedDaemon(t *testing.T) (*process, string) {
	d := startDaemon(t)
	a := fleet.Clusters[0].Name
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	content := fmt.Sprintf(`users:
  - {name: admin, token: %s}
  - {name: alpha-viewer, tokenSHA256: %s, clusters: [%s]}
  - {name: payments-viewer, token: %s, namespaces: [payments]}
`, adminToken, sha(alphaToken), a, paymentToken)
	if err := os.WriteFile(tokens, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return startProcess(t, d.bin, nil, "--config", d.config, "--token-file", tokens), tokens
}

func authGet(t *testing.T, p *process, token, path string, q url.Values, v any) int {
	t.Helper()
	return getAs(t, p.url, token, path, q, v)
}

// getAs GETs base+path?q with a bearer token (none when empty), decodes the body into v
// (when not nil) and returns the status code.
func getAs(t testing.TB, base, token, path string, q url.Values, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path+"?"+q.Encode(), nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		_ = jsonDecode(resp, v)
	}
	return resp.StatusCode
}

func TestAuthenticationAndScopes(t *testing.T) {
	p, _ := securedDaemon(t)
	a := fleet.Clusters[0].Name
	pods := url.Values{"resource": {"pods"}}

	for _, tc := range []struct{ token, path string }{{"", "/api/v1/objects"}, {"wrong-token-0123456789", "/api/v1/objects"}, {"", "/fleet/api/v1/pods"}, {"", "/metrics"}} {
		if code := authGet(t, p, tc.token, tc.path, pods, nil); code != http.StatusUnauthorized {
			t.Errorf("%s with token %q: %d, want 401", tc.path, tc.token, code)
		}
	}
	if code := authGet(t, p, "", "/healthz", nil, nil); code != http.StatusOK {
		t.Errorf("healthz must stay public for probes: %d", code)
	}
	// /readyz stays a bare status for probes; ?verbose names clusters, so it needs the
	// rights /api/v1/clusters needs, and shows a restricted user its clusters only.
	readyz := func(token, query string) (int, string) {
		if token == "" {
			return fetch(t, p.url+"/readyz"+query)
		}
		return fetch(t, p.url+"/readyz"+query, "Authorization", "Bearer "+token)
	}
	if code, body := readyz("", ""); code != http.StatusOK || strings.Contains(body, a) {
		t.Errorf("bare /readyz: %d %q, want 200 naming no cluster", code, body)
	}
	if code, body := readyz("", "?verbose"); code != http.StatusUnauthorized || strings.Contains(body, a) {
		t.Errorf("/readyz?verbose without credentials: %d, want 401 naming no cluster\n%s", code, body)
	}
	if code, body := readyz(alphaToken, "?verbose"); code != http.StatusOK || !strings.Contains(body, "cluster "+a+" ") || strings.Contains(body, "cluster "+fleet.Clusters[1].Name+" ") {
		t.Errorf("/readyz?verbose for a user of %s: %d, want 200 naming %s only\n%s", a, code, a, body)
	}

	var page objectsPage
	if code := authGet(t, p, adminToken, "/api/v1/objects", url.Values{"resource": {"pods"}, "limit": {"5000"}}, &page); code != http.StatusOK {
		t.Fatalf("admin: %d", code)
	}
	clustersSeen := map[string]bool{}
	for _, it := range page.Items {
		clustersSeen[it.Cluster] = true
	}
	if len(clustersSeen) != len(fleet.Clusters) {
		t.Errorf("admin sees clusters %v", clustersSeen)
	}

	// Limited to one cluster: lists, counts, the cluster list and watches show only it.
	page = objectsPage{}
	authGet(t, p, alphaToken, "/api/v1/objects", url.Values{"resource": {"pods"}, "limit": {"5000"}}, &page)
	if len(page.Items) == 0 {
		t.Fatal("alpha-viewer sees nothing")
	}
	for _, it := range page.Items {
		if it.Cluster != a {
			t.Errorf("alpha-viewer sees %s/%s/%s", it.Cluster, it.Object.Metadata.Namespace, it.Object.Metadata.Name)
		}
	}
	var count struct {
		Groups []struct{ Values []string }
	}
	authGet(t, p, alphaToken, "/api/v1/count", url.Values{"resource": {"pods"}, "groupBy": {"cluster"}}, &count)
	if len(count.Groups) != 1 || count.Groups[0].Values[0] != a {
		t.Errorf("alpha-viewer counts %+v", count.Groups)
	}
	var cl struct{ Clusters []struct{ Name string } }
	authGet(t, p, alphaToken, "/api/v1/clusters", nil, &cl)
	if len(cl.Clusters) != 1 || cl.Clusters[0].Name != a {
		t.Errorf("alpha-viewer's cluster list: %+v", cl.Clusters)
	}
	if code := authGet(t, p, alphaToken, "/api/v1/objects", url.Values{"resource": {"pods"}, "cluster": {fleet.Clusters[1].Name}}, nil); code != http.StatusNotFound {
		t.Errorf("another cluster by name: %d, want 404", code)
	}
	if code := authGet(t, p, alphaToken, "/clusters/"+fleet.Clusters[1].Name+"/api/v1/pods", nil, nil); code != http.StatusNotFound {
		t.Errorf("another cluster's kube API: %d, want 404", code)
	}
	if code := authGet(t, p, alphaToken, "/metrics", nil, nil); code != http.StatusForbidden {
		t.Errorf("/metrics for a restricted user: %d, want 403", code)
	}

	// Watch: changes in another cluster never reach the restricted user.
	req, _ := http.NewRequest(http.MethodGet, p.url+"/api/v1/watch?resource=configmaps&labelSelector=e2e%3Dscoped", nil)
	req.Header.Set("Authorization", "Bearer "+alphaToken)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan watchLine, 10)
	go readLines(resp, lines)
	for i, c := range []int{1, 0} { // the other cluster first, then alpha
		cs := kubernetes.NewForConfigOrDie(fleet.Clusters[c].AdminConfig())
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scoped-%d", i), Namespace: "default", Labels: map[string]string{"e2e": "scoped"}}}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer cs.CoreV1().ConfigMaps("default").Delete(context.Background(), cm.Name, metav1.DeleteOptions{})
	}
	if l := next(t, lines); l.Cluster != a || l.Object.Metadata.Name != "scoped-1" {
		t.Errorf("restricted watch got %s/%s first", l.Cluster, l.Object.Metadata.Name)
	}

	// Limited to one namespace.
	page = objectsPage{}
	authGet(t, p, paymentToken, "/api/v1/objects", url.Values{"resource": {"pods"}, "limit": {"5000"}}, &page)
	if len(page.Items) == 0 {
		t.Fatal("payments-viewer sees nothing")
	}
	for _, it := range page.Items {
		if it.Object.Metadata.Namespace != "payments" {
			t.Errorf("payments-viewer sees %s/%s", it.Object.Metadata.Namespace, it.Object.Metadata.Name)
		}
	}
}

func TestSecretsAreRefusedByDefault(t *testing.T) {
	p, _ := securedDaemon(t)
	var e struct{ Message string }
	if code := authGet(t, p, adminToken, "/api/v1/objects", url.Values{"resource": {"secrets"}}, &e); code != http.StatusForbidden || !strings.Contains(e.Message, "serveSecrets") {
		t.Errorf("secrets list: %d %q, want 403 naming api.serveSecrets", code, e.Message)
	}
	if code := authGet(t, p, adminToken, "/fleet/api/v1/secrets", nil, nil); code != http.StatusNotFound {
		t.Errorf("secrets through the kube API: %d, want 404 (not discovered)", code)
	}
}

func TestNonLoopbackNeedsAuthentication(t *testing.T) {
	d := startDaemon(t)
	out, err := exec.Command(d.bin, "serve", "--config", d.config, "--listen", "0.0.0.0:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing to serve") {
		t.Errorf("non-loopback without auth: %v\n%s", err, out)
	}
}

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }

func readLines(resp *http.Response, out chan<- watchLine) {
	defer close(out)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var l watchLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out <- l
		}
	}
}

func TestSecretsServedWithoutValues(t *testing.T) {
	d := startDaemon(t)
	a := fleet.Clusters[0]
	p := startProcess(t, d.bin, nil, "--config", d.config, "--serve-secrets")
	uid, err := kubectl(t, a.Name, "get", "secret", "-n", "payments", "payments-db-credentials", "-o", "jsonpath={.metadata.uid}")
	if err != nil {
		t.Fatal(err, uid)
	}
	var page struct {
		Items []struct {
			Cluster string
			Object  struct {
				Metadata metav1.ObjectMeta `json:"metadata"`
				Data     map[string]string `json:"data"`
			}
		}
	}
	if code := authGet(t, p, "", "/api/v1/objects", url.Values{"resource": {"secrets"}, "limit": {"5000"}}, &page); code != http.StatusOK {
		t.Fatalf("secrets with --serve-secrets: %d", code)
	}
	found := false
	for _, it := range page.Items {
		if string(it.Object.Metadata.UID) == uid {
			found = true
			if _, ok := it.Object.Data["password"]; !ok {
				t.Error("key names should stay")
			}
		}
		for k, v := range it.Object.Data {
			if v != "" {
				t.Errorf("%s/%s/%s key %s served with a value", it.Cluster, it.Object.Metadata.Namespace, it.Object.Metadata.Name, k)
			}
		}
	}
	if !found {
		t.Errorf("secret %s not served", uid)
	}
}

// TestTokenReviewMode authenticates real service-account tokens through TokenReview
// against the first cluster, and scopes them by the token file's policy entries.
func TestTokenReviewMode(t *testing.T) {
	d := startDaemon(t)
	a, b := fleet.Clusters[0], fleet.Clusters[1]
	saToken := func(c *testfleet.Cluster, name string) string {
		cs := kubernetes.NewForConfigOrDie(c.AdminConfig())
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
		if _, err := cs.CoreV1().ServiceAccounts("default").Create(context.Background(), sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		tok, err := cs.CoreV1().ServiceAccounts("default").CreateToken(context.Background(), name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Status.Token
	}
	good := saToken(a, "api-client")
	elsewhere := saToken(b, "api-client") // signed by another cluster's key
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(fmt.Sprintf("users:\n  - {name: \"system:serviceaccount:default:api-client\", clusters: [%s]}\n", a.Name)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, d.bin, nil, "--config", d.config, "--token-file", policy,
		"--token-review-kubeconfig", fleet.Kubeconfig, "--token-review-context", a.Name)

	var page objectsPage
	if code := authGet(t, p, good, "/api/v1/objects", url.Values{"resource": {"pods"}, "limit": {"5000"}}, &page); code != http.StatusOK {
		t.Fatalf("a real service-account token: %d", code)
	}
	if len(page.Items) == 0 {
		t.Fatal("the service account sees nothing")
	}
	for _, it := range page.Items {
		if it.Cluster != a.Name {
			t.Errorf("the policy limits the service account to %s; it saw %s", a.Name, it.Cluster)
		}
	}
	// Default deny: a token the home cluster authenticates (every pod has one) but no
	// policy entry names is refused on every route that says anything of the fleet, and
	// the refusal names the identity.
	unrelated := saToken(a, "unrelated")
	for _, path := range []string{
		"/api/v1/objects?resource=pods", "/api/v1/count?resource=pods", "/api/v1/watch?resource=pods",
		"/api/v1/objects/" + a.Name + "/pods/default/x", "/api/v1/clusters", "/api/v1/resources",
		"/fleet/api/v1/pods", "/clusters/" + a.Name + "/api/v1/pods", "/fleet/api", "/fleet/openapi/v3",
		"/readyz?verbose", "/metrics",
	} {
		code, body := fetch(t, p.url+path, "Authorization", "Bearer "+unrelated)
		if code != http.StatusForbidden || !strings.Contains(body, "system:serviceaccount:default:unrelated") {
			t.Errorf("an unrelated service account on %s: %d, want 403 naming it\n%.300s", path, code, body)
		}
	}

	forged := good[:len(good)-4] + "AAAA"
	for name, tok := range map[string]string{"forged": forged, "another cluster's": elsewhere, "garbage": "not-a-jwt-at-all-0123456789"} {
		if code := authGet(t, p, tok, "/api/v1/objects", url.Values{"resource": {"pods"}}, nil); code != http.StatusUnauthorized {
			t.Errorf("%s token: %d, want 401", name, code)
		}
	}
}
