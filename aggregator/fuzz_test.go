package aggregator

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

func FuzzContinueToken(f *testing.F) {
	valid := encodeContinue(continueToken{Query: "q", Cluster: "a", Key: "ns/name", Issued: time.Now().Unix()})
	f.Add(valid)
	f.Add("")
	f.Add("e30.AAAA")
	f.Add(valid[:len(valid)-2])
	f.Fuzz(func(t *testing.T, token string) {
		tok, err := decodeContinue(token, "q", time.Now(), time.Hour)
		// Only what this process signed can be accepted: the seed token's payload.
		if err == nil && (tok.Cluster != "a" || tok.Key != "ns/name") {
			t.Errorf("accepted a forged token %q: %+v", token, tok)
		}
	})
}

func FuzzCursor(f *testing.F) {
	f.Add(Cursor{"alpha": 12, "bravo": 99}.Encode())
	f.Add("")
	f.Add("bnVsbA")
	f.Add("!!")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			return
		}
		back, err := ParseCursor(c.Encode())
		if err != nil || len(back) != len(c) {
			t.Errorf("cursor %v does not round-trip: %v %v", c, back, err)
		}
		for k, v := range c {
			if back[k] != v {
				t.Errorf("cursor %v does not round-trip: %v", c, back)
			}
		}
	})
}

// FuzzSelectors: any label and field selector that apimachinery parses can be matched
// against indexed objects without panicking, and List agrees with a scan of the matcher.
func FuzzSelectors(f *testing.F) {
	f.Add("app=web", "status.phase=Running")
	f.Add("app in (api,web),tier", "spec.nodeName!=n1")
	f.Add("!app", "metadata.name=a1")
	f.Add("tier notin (front)", "spec.containers=x")
	fx := seedFixture(f)
	f.Fuzz(func(t *testing.T, ls, fs string) {
		lsel, err := labels.Parse(ls)
		if err != nil {
			return
		}
		fsel, err := fields.ParseSelector(fs)
		if err != nil {
			return
		}
		q := Query{Resource: "pods", LabelSelector: lsel, FieldSelector: fsel}
		res, err := fx.ix.List(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		all, _ := fx.ix.List(context.Background(), Query{Resource: "pods"})
		q.normalize()
		m := newMatcher(q)
		want := 0
		for _, it := range all.Items {
			if m.matches(it.Cluster, it.Object) {
				want++
			}
		}
		if len(res.Items) != want {
			t.Errorf("%q / %q: List gave %d, the matcher %d", ls, fs, len(res.Items), want)
		}
		// Counting scans entries (flattened labels, interned namespaces), not objects.
		for _, groupBy := range [][]string{{"cluster", "namespace"}, {"label:app"}, {"namespace", "label:tier"}} {
			c, err := fx.ix.Count(context.Background(), q, groupBy)
			if err != nil {
				t.Fatal(err)
			}
			if c.Total != want {
				t.Errorf("%q / %q by %v: Count gave %d, the matcher %d", ls, fs, groupBy, c.Total, want)
			}
		}
	})
}
