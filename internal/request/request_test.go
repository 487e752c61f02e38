package request

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/clusters"
	"github.com/fleetcache/fleetcache/internal/wire"
)

// testIndex holds n pods in clusters a and b (alternating) and one Secret in a.
func testIndex(t *testing.T, n int) *aggregator.Index {
	t.Helper()
	ix := aggregator.New(nil, aggregator.Options{})
	pods, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Pod"), "pods")
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := clusters.NewCompactor(corev1.SchemeGroupVersion.WithKind("Secret"), "secrets")
	if err != nil {
		t.Fatal(err)
	}
	refs := map[string]*clusters.InformerRef{}
	ref := func(cluster, resource, kind string) *clusters.InformerRef {
		if refs[cluster+resource] == nil {
			refs[cluster+resource] = &clusters.InformerRef{Cluster: cluster, Resource: resource, Kind: kind, APIVersion: "v1", Namespaced: true, Names: []string{resource}, ID: uint64(len(refs) + 1)}
		}
		return refs[cluster+resource]
	}
	for i := range n {
		o, err := pods.Compact(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("p-%04d", i), UID: types.UID(fmt.Sprint(i)), ResourceVersion: fmt.Sprint(i + 1)}})
		if err != nil {
			t.Fatal(err)
		}
		ix.OnAdd(ref([]string{"a", "b"}[i%2], "pods", "Pod"), o)
	}
	o, err := secrets.Compact(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tls", ResourceVersion: "1"}, Data: map[string][]byte{"key": []byte("private")}})
	if err != nil {
		t.Fatal(err)
	}
	ix.OnAdd(ref("a", "secrets", "Secret"), o)
	return ix
}

// One rule of page sizes, under each API's contract.
func TestPageSize(t *testing.T) {
	p := New(nil, Options{})
	for _, tc := range []struct {
		in         string
		upperBound bool // the Kubernetes API
		want       int
		bad        bool
	}{
		// /api/v1: 1 to MaxLimit, DefaultLimit when none.
		{"", false, 500, false}, {"1", false, 1, false}, {"5000", false, 5000, false},
		{"0", false, 0, true}, {"5001", false, 0, true}, {"999999", false, 0, true},
		// The Kubernetes API: an upper bound; none or 0 is everything.
		{"", true, 0, false}, {"0", true, 0, false}, {"500", true, 500, false},
		{"5001", true, 5000, false}, {"999999", true, 5000, false},
		// Not a non-negative integer: refused by both.
		{"-1", false, 0, true}, {"-1", true, 0, true}, {"ten", false, 0, true}, {"ten", true, 0, true},
		{"1.5", true, 0, true}, {"99999999999999999999", true, 0, true},
	} {
		got, err := p.PageSize(tc.in, tc.upperBound)
		var bp BadParam
		switch {
		case tc.bad && (!errors.As(err, &bp) || bp.Name != "limit" || !strings.Contains(err.Error(), tc.in)):
			t.Errorf("limit %q (upper bound %v): %v, want a BadParam naming limit and the value", tc.in, tc.upperBound, err)
		case !tc.bad && (err != nil || got != tc.want):
			t.Errorf("limit %q (upper bound %v): %d %v, want %d", tc.in, tc.upperBound, got, err, tc.want)
		}
	}
}

func TestQueryLimitsAndPolicy(t *testing.T) {
	ix := testIndex(t, 4)
	p := New(ix, Options{DefaultLimit: 3, MaxLimit: 10})
	r := httptest.NewRequest("GET", "/api/v1/objects", nil)
	for _, tc := range []struct {
		name      string
		rd        Read
		wantLimit int
		wantErr   string // a BadParam's parameter, or "secrets"
	}{
		{"paged, no limit", Read{Resource: "pods", Paged: true}, 3, ""},
		{"paged, too large", Read{Resource: "pods", Paged: true, Limit: "11"}, 0, "limit"},
		{"paged, upper bound", Read{Resource: "pods", Paged: true, UpperBound: true, Limit: "11"}, 10, ""},
		{"paged, upper bound, none", Read{Resource: "pods", Paged: true, UpperBound: true}, 0, ""},
		{"whole ignores the limit", Read{Resource: "pods", Paged: true, Whole: true, Limit: "2"}, 0, ""},
		{"whole still validates it", Read{Resource: "pods", Paged: true, Whole: true, Limit: "-2"}, 0, "limit"},
		{"not paged", Read{Resource: "pods", Limit: "2"}, 0, ""},
		{"no resource", Read{Paged: true}, 0, "resource"},
		{"bad glob", Read{Resource: "pods", Cluster: "["}, 0, "cluster"},
		{"bad namespace", Read{Resource: "pods", Namespace: "Bad_NS"}, 0, "namespace"},
		{"bad label selector", Read{Resource: "pods", LabelSelector: "a in (("}, 0, "labelSelector"},
		{"bad field selector", Read{Resource: "pods", FieldSelector: "a=b=c"}, 0, "fieldSelector"},
		{"secrets off", Read{Resource: "secrets", Paged: true}, 0, "secrets"},
	} {
		q, err := p.Query(r, tc.rd)
		var bp BadParam
		switch {
		case tc.wantErr == "secrets":
			if !errors.Is(err, ErrSecretsOff) {
				t.Errorf("%s: %v, want ErrSecretsOff", tc.name, err)
			}
		case tc.wantErr != "":
			if !errors.As(err, &bp) || bp.Name != tc.wantErr {
				t.Errorf("%s: %v, want a BadParam naming %s", tc.name, err, tc.wantErr)
			}
		case err != nil || q.Limit != tc.wantLimit:
			t.Errorf("%s: limit %d %v, want %d", tc.name, q.Limit, err, tc.wantLimit)
		}
	}
	// A name selects that object: a watch of one object.
	q, err := p.Query(r, Read{Resource: "pods", Name: "p-0001", FieldSelector: "metadata.namespace=ns"})
	if err != nil {
		t.Fatal(err)
	}
	if got := q.FieldSelector.String(); got != "metadata.name=p-0001,metadata.namespace=ns" {
		t.Errorf("field selector %q", got)
	}
}

// The Secret policy is one rule: hidden from the resource list, refused on every read,
// served (without values) only with ServeSecrets.
func TestSecretPolicy(t *testing.T) {
	ix := testIndex(t, 2)
	r := httptest.NewRequest("GET", "/", nil)
	off, on := New(ix, Options{}), New(ix, Options{ServeSecrets: true})
	info, _ := ix.Resource("secrets")
	if off.Visible(info) || !on.Visible(info) {
		t.Errorf("visible: off %v, on %v", off.Visible(info), on.Visible(info))
	}
	names := func(p *Pipeline) (out []string) {
		for _, r := range p.Resources() {
			out = append(out, r.Name)
		}
		return out
	}
	if got := strings.Join(names(off), ","); got != "pods" {
		t.Errorf("resources without ServeSecrets: %s", got)
	}
	if got := strings.Join(names(on), ","); got != "pods,secrets" {
		t.Errorf("resources with ServeSecrets: %s", got)
	}
	if err := off.Resolve("secrets"); !errors.Is(err, ErrSecretsOff) {
		t.Errorf("resolve secrets: %v", err)
	}
	if err := on.Resolve("secrets"); err != nil {
		t.Errorf("resolve secrets with ServeSecrets: %v", err)
	}
	if _, err := off.Get(r, "a", "secrets", "ns", "tls"); !errors.Is(err, ErrSecretsOff) || Status(err).Status().Code != http.StatusForbidden {
		t.Errorf("get without ServeSecrets: %v", err)
	}
	it, err := on.Get(r, "a", "secrets", "ns", "tls")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := wire.AppendPlainObject(nil, it)
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	if v, ok := s.Data["key"]; !ok || len(v) != 0 {
		t.Errorf("served secret data %q: want the key without its value", s.Data)
	}
}

// IsWatch decides as kube-apiserver decodes the watch parameter, on collections and on
// named objects.
func TestIsWatch(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"/api/v1/watch?resource=pods", true},
		{"/api/v1/objects?resource=pods&watch=1", false}, // not a parameter of this API
		{"/fleet/api/v1/pods", false},
		{"/fleet/api/v1/pods?watch=1", true},
		{"/fleet/api/v1/pods?watch=true", true},
		{"/fleet/api/v1/pods?watch=True", true},
		{"/fleet/api/v1/pods?watch=yes", true},
		{"/fleet/api/v1/pods?watch=", true},
		{"/fleet/api/v1/pods?watch=0", false},
		{"/fleet/api/v1/pods?watch=false", false},
		{"/fleet/api/v1/pods?watch=FALSE", false},
		{"/fleet/api/v1/namespaces/ns/pods/p?watch=1", true}, // a named object: still a watch
		{"/clusters/a/apis/apps/v1/namespaces/ns/deployments/d?watch=true", true},
		{"/clusters/a/apis/apps/v1/deployments", false},
		{"/metrics?watch=1", false},
		{"/fleet/api/v1/namespaces/ns?watch=1", true}, // one Namespace object
		// Paths that cannot watch are ordinary requests whatever ?watch says: inside the
		// in-flight cap and the request timeout.
		{"/fleet/api?watch=1", false},
		{"/fleet/apis?watch=1", false},
		{"/fleet/api/v1?watch=1", false},
		{"/fleet/apis/apps/v1?watch=1", false},
		{"/fleet/version?watch=1", false},
		{"/fleet/openapi/v3/api/v1?watch=1", false},
		{"/clusters/a/openapi/v3?watch=true", false},
		{"/clusters/a?watch=1", false},
		{"/fleet/api/v1/namespaces/ns/pods/p/log?watch=1", false}, // a subresource
		{"/fleet/api/v1/pods/p/status?watch=1", false},
	} {
		r := httptest.NewRequest("GET", tc.url, nil)
		if got := IsWatch(r); got != tc.want {
			t.Errorf("%s: IsWatch %v, want %v", tc.url, got, tc.want)
		}
		if FaceOf(r) != FaceKube || !tc.want && r.URL.Query().Has("watch") {
			continue
		}
		opts := &internalversion.ListOptions{}
		if err := metainternalversionscheme.ParameterCodec.DecodeParameters(r.URL.Query(), metav1.SchemeGroupVersion, opts); err != nil {
			t.Fatal(err)
		}
		if opts.Watch != IsWatch(r) {
			t.Errorf("%s: IsWatch %v, kube-apiserver's decoding %v", tc.url, IsWatch(r), opts.Watch)
		}
	}
}

func TestStatusMapsEveryError(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   int32
		reason metav1.StatusReason
	}{
		{fmt.Errorf("continue token: %w", aggregator.ErrExpired), 410, metav1.StatusReasonExpired},
		{fmt.Errorf("%w %q", aggregator.ErrUnknownResource, "x"), 404, metav1.StatusReasonNotFound},
		{fmt.Errorf("%w: c", aggregator.ErrUnknownCluster), 404, metav1.StatusReasonNotFound},
		{aggregator.ErrNotFound, 404, metav1.StatusReasonNotFound},
		{ErrSecretsOff, 403, metav1.StatusReasonForbidden},
		{BadParam{"limit", "no"}, 400, metav1.StatusReasonBadRequest},
		{fmt.Errorf("continue token: %w", aggregator.ErrInvalidToken), 400, metav1.StatusReasonBadRequest},
		{TooMany{Msg: "busy", RetryAfter: 3}, 429, metav1.StatusReasonTooManyRequests},
		{apierrors.NewMethodNotSupported(corev1.Resource("pods"), "delete"), 405, metav1.StatusReasonMethodNotAllowed},
		{errors.New("anything else"), 400, metav1.StatusReasonBadRequest},
	} {
		st := Status(tc.err).Status()
		if st.Code != tc.code || st.Reason != tc.reason || !strings.Contains(st.Message, strings.TrimPrefix(tc.err.Error(), "Error from server: ")) && tc.code != 405 {
			t.Errorf("%v: %d %s %q, want %d %s", tc.err, st.Code, st.Reason, st.Message, tc.code, tc.reason)
		}
	}
}

// WriteError speaks each face's error format, from the one mapping.
func TestWriteErrorPerFace(t *testing.T) {
	err := TooMany{Msg: "too many requests in flight", RetryAfter: 2}
	for _, path := range []string{"/api/v1/objects", "/fleet/api/v1/pods", "/clusters/a/api/v1/pods"} {
		w := httptest.NewRecorder()
		WriteError(w, httptest.NewRequest("GET", path, nil), err)
		if w.Code != 429 || w.Header().Get("Retry-After") != "2" || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d, headers %v", path, w.Code, w.Header())
		}
		var body struct {
			Kind, APIVersion, Status, Reason, Message string
			Code                                      int
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %v: %s", path, err, w.Body)
		}
		if body.Code != 429 || body.Reason != "TooManyRequests" || body.Message != err.Msg {
			t.Errorf("%s: body %s", path, w.Body)
		}
		kube := strings.HasPrefix(path, "/fleet/") || strings.HasPrefix(path, "/clusters/")
		if isStatus := body.Kind == "Status" && body.APIVersion == "v1" && body.Status == "Failure"; isStatus != kube {
			t.Errorf("%s: a Kubernetes Status %v, want %v: %s", path, isStatus, kube, w.Body)
		}
	}
}

// Every list, whole or paged, is cut at MaxResponseBytes, and continues from where it
// was cut: following the tokens yields every item exactly once.
func TestResponseCapContinues(t *testing.T) {
	const n = 300
	ix := testIndex(t, n)
	for _, tc := range []struct {
		limit      string
		chunk, max int
	}{
		{"", wholeChunk, 2000}, // a whole list, cut at the cap
		{"", 16, 2000},         // read from the index 16 items at a time, cut at the cap
		{"", 16, 160},          // cut exactly at a chunk's end (every item is 10 bytes)
		{"", 16, 1 << 20},      // read 16 at a time, answered in one
		{"7", wholeChunk, 2000},
	} {
		limit := tc.limit
		whole := limit == "" // otherwise pages of 7
		p := New(ix, Options{MaxResponseBytes: tc.max})
		p.chunk = tc.chunk
		r := httptest.NewRequest("GET", "/fleet/api/v1/pods", nil)
		seen := map[string]int{}
		pages, cont := 0, ""
		for {
			q, err := p.Query(r, Read{Resource: "pods", Paged: true, UpperBound: true, Whole: whole, Limit: limit, Continue: cont})
			if err != nil {
				t.Fatal(err)
			}
			ans, err := p.StreamList(r, q)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			cont = ""
			err = ans.Stream(&buf, ListEncoder{
				Head: []byte(`{"items":[`),
				Item: func(dst []byte, it aggregator.Item) ([]byte, error) {
					return wire.AppendString(dst, it.Cluster+"/"+it.Object.Name), nil
				},
				Tail: func(dst []byte, c string) []byte {
					cont = c
					return append(dst, "]}"...)
				},
			})
			ans.Close()
			if err != nil {
				t.Fatal(err)
			}
			var page struct{ Items []string }
			if err := json.Unmarshal(buf.Bytes(), &page); err != nil {
				t.Fatalf("page %d: %v: %s", pages, err, buf.Bytes())
			}
			// The cap counts the items' encodings (not the commas between them).
			if items := buf.Len() - len(`{"items":[]}`) - max(0, len(page.Items)-1); items > tc.max {
				t.Errorf("page %d: %d bytes of items, over the cap", pages, items)
			}
			if !whole && len(page.Items) > 7 {
				t.Errorf("page %d: %d items, limit 7", pages, len(page.Items))
			}
			for _, it := range page.Items {
				seen[it]++
			}
			pages++
			if cont == "" {
				break
			}
		}
		if len(seen) != n {
			t.Errorf("%+v: %d distinct items over %d pages, want %d", tc, len(seen), pages, n)
		}
		for it, k := range seen {
			if k != 1 {
				t.Errorf("%+v: %s seen %d times", tc, it, k)
			}
		}
		if whole && tc.max <= 2000 && pages < 2 {
			t.Errorf("a whole list of %d items in %d page(s): not cut at the cap", n, pages)
		}
		if whole && tc.max > 2000 && pages != 1 {
			t.Errorf("a whole list of %d items under the cap in %d pages, want 1", n, pages)
		}
	}
}

// The first item is sent whatever its size: a list always makes progress.
func TestBudgetFirstItemAlwaysFits(t *testing.T) {
	ix := testIndex(t, 3)
	res, err := ix.List(context.Background(), aggregator.Query{Resource: "pods"})
	if err != nil {
		t.Fatal(err)
	}
	b := &Budget{left: 10, res: res}
	if !b.Fit(0, 100) || b.Fit(1, 1) || b.Continue() == "" {
		t.Errorf("budget: first item refused, or second sent past the cap")
	}
	next, err := ix.List(context.Background(), aggregator.Query{Resource: "pods", Continue: b.Continue()})
	if err != nil || len(next.Items) != 2 || next.Items[0].Object.Name != res.Items[1].Object.Name {
		t.Errorf("continue after the first item: %v %v", next, err)
	}
}

func TestKubePath(t *testing.T) {
	for in, want := range map[string]string{"/fleet/api/v1/pods": "/api/v1/pods", "/clusters/a/api": "/api", "/clusters/a": "", "/api/v1/objects": ""} {
		got, ok := kubePath(in)
		if got != want || ok != (want != "") {
			t.Errorf("%s: %q %v", in, got, ok)
		}
	}
}

// A Kubernetes API list without a limit is everything in one answer; an answer
// Uncapped streams every item, however small the cap, with no continue token.
func TestAListAskedAtOnceIsNeverCut(t *testing.T) {
	for _, tc := range []struct {
		rd   Read
		want bool
	}{
		{Read{UpperBound: true}, true},
		{Read{UpperBound: true, Limit: "0"}, true},
		{Read{UpperBound: true, Limit: "500"}, false},
		{Read{}, false}, // /api/v1: always pages
	} {
		if got := tc.rd.AtOnce(); got != tc.want {
			t.Errorf("%+v: AtOnce %v, want %v", tc.rd, got, tc.want)
		}
	}
	const n = 300
	p := New(testIndex(t, n), Options{MaxResponseBytes: 100})
	p.chunk = 16
	r := httptest.NewRequest("GET", "/fleet/api/v1/pods", nil)
	q, err := p.Query(r, Read{Resource: "pods", Paged: true, UpperBound: true, Whole: true})
	if err != nil {
		t.Fatal(err)
	}
	ans, err := p.StreamList(r, q)
	if err != nil {
		t.Fatal(err)
	}
	defer ans.Close()
	ans.Uncapped()
	var items atomic.Int32 // items may be encoded on several cores
	cont := "unset"
	err = ans.Stream(io.Discard, ListEncoder{
		Item: func(dst []byte, it aggregator.Item) ([]byte, error) {
			items.Add(1)
			return wire.AppendString(dst, it.Cluster+"/"+it.Object.Name), nil
		},
		Tail: func(dst []byte, c string) []byte { cont = c; return dst },
	})
	if err != nil || items.Load() != n || cont != "" {
		t.Errorf("uncapped: %d of %d items, continue %q, %v", items.Load(), n, cont, err)
	}
}
