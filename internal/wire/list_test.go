package wire

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/fixtures"
)

// A Table whose metadata follows its rows (StartRows, EndRows) decodes to the same
// metav1.Table as one written with its metadata first.
func TestTableWithMetadataLast(t *testing.T) {
	now := time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)
	items := []aggregator.Item{{Cluster: "alpha", Resource: "pods", Object: compact(t, fixtures.RealisticPod(1))}, {Cluster: "bravo", Resource: "pods", Object: compact(t, fixtures.RealisticPod(2))}}
	for _, meta := range [][2]string{{"", ""}, {"rv-1", ""}, {"", "next"}, {"rv-1", "next"}} {
		tb := NewTable(podInfo, IncludeMetadata)
		first, last := tb.Start(nil, meta[0], meta[1]), tb.StartRows(nil)
		for i, it := range items {
			if i > 0 {
				first, last = append(first, ','), append(last, ',')
			}
			var err error
			if first, err = tb.AppendRow(first, it, now); err != nil {
				t.Fatal(err)
			}
			last, _ = tb.AppendRow(last, it, now)
		}
		first, last = tb.End(first), tb.EndRows(last, meta[0], meta[1])
		var a, b metav1.Table
		if err := json.Unmarshal(first, &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(last, &b); err != nil {
			t.Fatalf("%v: %s", err, last)
		}
		if !reflect.DeepEqual(a, b) || b.ResourceVersion != meta[0] || b.Continue != meta[1] || len(b.Rows) != 2 {
			t.Errorf("metadata %v: tables differ:\n%s\n%s", meta, first, last)
		}
	}
}
