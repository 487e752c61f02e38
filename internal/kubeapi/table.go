package kubeapi

import (
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fleetcache/fleetcache/aggregator"
	"github.com/fleetcache/fleetcache/internal/wire"
)

// table builds a server-side Table of a few items (a get, a watch event): CLUSTER, NAME,
// the kind's columns, AGE; see wire.Table. Lists stream instead (writeTableList). objs,
// the decoded items, are not needed: cells were computed when the objects were cached.
func table(info aggregator.ResourceInfo, items []aggregator.Item, _ []runtime.Object, rv string) *metav1.Table {
	t, err := wire.NewTable(info, wire.IncludeMetadata).Build(items, rv, time.Now())
	if err != nil {
		return &metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}, ListMeta: metav1.ListMeta{ResourceVersion: rv}}
	}
	return t
}

// includeObject reads the apiserver's includeObject parameter of a Table request.
func includeObject(r *http.Request) wire.IncludeObject {
	switch r.URL.Query().Get("includeObject") {
	case "Object":
		return wire.IncludeFull
	case "None":
		return wire.IncludeNone
	}
	return wire.IncludeMetadata
}
