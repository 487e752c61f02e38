package sharding

import (
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/net"
)

func TestObjectName(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/pods":                               "",
		"/api/v1/namespaces/a/pods":                  "",
		"/api/v1/namespaces/a/pods/p":                "p",
		"/api/v1/namespaces/a":                       "a", // the namespace itself
		"/api/v1/nodes/n1":                           "n1",
		"/apis/apps/v1/namespaces/a/deployments/web": "web",
		"/apis/apps/v1/deployments":                  "",
	} {
		if got, ok := objectName(path); !ok || got != want {
			t.Errorf("objectName(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
	if _, ok := objectName("/api/v1/namespaces/a/pods/p/log"); ok {
		t.Error("a subresource is not merged")
	}
}

func TestCutString(t *testing.T) {
	line := []byte(`"ctx-1""ns""we\"ird"{"kind":"Pod"}`)
	var got []string
	rest := line
	for range 3 {
		var s string
		var err error
		if s, rest, err = cutString(rest); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if strings.Join(got, "|") != `ctx-1|ns|we"ird` || string(rest) != `{"kind":"Pod"}` {
		t.Errorf("got %q, rest %q", got, rest)
	}
	if _, _, err := cutString([]byte(`"open`)); err == nil {
		t.Error("an unterminated string must be an error")
	}
}

// The Warning must stay a valid quoted string whatever the reasons say, or kubectl drops it.
func TestPartialWarningParses(t *testing.T) {
	w := httptest.NewRecorder()
	partialWarning(w, map[string]string{
		"b": `replica r1: Get "http://x": dial tcp: connection refused`,
		"a": `replica r1: Get "http://x": dial tcp: connection refused`,
		"c": "no live replica owns it",
	})
	warnings, errs := net.ParseWarningHeaders(w.Header().Values("Warning"))
	if len(errs) > 0 || len(warnings) != 1 {
		t.Fatalf("warnings %v, errors %v", warnings, errs)
	}
	want := "fleetcache: partial answer: no replica answered for a, b (replica r1: Get 'http://x': dial tcp: connection refused); c (no live replica owns it)"
	if warnings[0].Text != want {
		t.Errorf("warning %q\nwant    %q", warnings[0].Text, want)
	}
}

func TestVersionMatchesReaders(t *testing.T) {
	rd := func(id string, clusters ...string) *reader {
		return &reader{member: Member{Identity: id}, clusters: clusters}
	}
	v := version{"r1": {RV: "e.1", Clusters: clusterDigest([]string{"a", "b"})}, "r2": {RV: "f.2", Clusters: clusterDigest([]string{"c"})}}
	parsed, err := parseVersion(v.encode())
	if err != nil {
		t.Fatal(err)
	}
	if !parsed.matches([]*reader{rd("r1", "a", "b"), rd("r2", "c")}) {
		t.Error("the same readers and clusters must match")
	}
	if parsed.matches([]*reader{rd("r1", "a"), rd("r2", "b", "c")}) {
		t.Error("a cluster that moved must not match")
	}
	if parsed.matches([]*reader{rd("r1", "a", "b", "c")}) {
		t.Error("a reader gone must not match")
	}
	if _, err := parseVersion("abc.def"); err == nil {
		t.Error("a single daemon's resourceVersion is not a router's")
	}
}
