package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

// getTable fetches a server-side Table the way kubectl asks for one.
func getTable(t *testing.T, cfg *rest.Config, path string) *metav1.Table {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, cfg.Host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", tableAccept)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s%s: %s", cfg.Host, path, resp.Status)
	}
	var tb metav1.Table
	if err := json.NewDecoder(resp.Body).Decode(&tb); err != nil {
		t.Fatal(err)
	}
	return &tb
}

// volatile columns change with the time of the request: they are compared by presence.
func volatile(name string, cell any) bool {
	s := fmt.Sprint(cell)
	return strings.EqualFold(name, "Age") || strings.HasSuffix(s, " ago)")
}

// TestKubectlTablesMatchTheClusters: the fleet's Table for a resource is every cluster's
// own Table (kube-apiserver's printer) with a CLUSTER column in front: same columns,
// same cells, row for row.
func TestKubectlTablesMatchTheClusters(t *testing.T) {
	d := startDaemon(t)
	fleetCfg := &rest.Config{Host: d.url + "/fleet"}
	for _, path := range []string{"/api/v1/pods", "/apis/apps/v1/deployments", "/api/v1/namespaces", "/api/v1/nodes", "/api/v1/configmaps", "/apis/example.com/v1/widgets"} {
		t.Run(path, func(t *testing.T) {
			want := map[string][]string{} // cluster/namespace/name -> cells after the name
			var wantCols []string
			for _, c := range fleet.Clusters {
				hc, _ := rest.HTTPClientFor(c.ReaderConfig())
				if resp, err := hc.Get(c.ReaderConfig().Host + path); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusNotFound {
						continue // the CRD is not installed in this cluster
					}
				}
				tb := getTable(t, c.ReaderConfig(), path)
				cols := columnNames(tb)
				if wantCols == nil {
					wantCols = cols
				} else if fmt.Sprint(cols) != fmt.Sprint(wantCols) {
					t.Fatalf("clusters disagree on columns: %v vs %v", cols, wantCols)
				}
				for _, row := range tb.Rows {
					want[c.Name+"/"+rowKey(t, row)] = cells(tb, row, 1)
				}
			}
			if len(want) == 0 {
				t.Fatal("the clusters have none: nothing to compare")
			}
			var got *metav1.Table
			waitFor(t, 30*time.Second, "the fleet table has every row", func() (bool, string) {
				got = getTable(t, fleetCfg, path)
				return len(got.Rows) == len(want), fmt.Sprintf("%d rows, want %d", len(got.Rows), len(want))
			})
			if cols := columnNames(got); fmt.Sprint(cols) != fmt.Sprint(append([]string{"Cluster/string/0"}, wantCols...)) {
				t.Errorf("columns %v, want Cluster then %v", cols, wantCols)
			}
			var keys []string
			for _, row := range got.Rows {
				cluster := fmt.Sprint(row.Cells[0])
				key := cluster + "/" + rowKey(t, row)
				keys = append(keys, key)
				w, ok := want[key]
				if !ok {
					t.Errorf("row %s is in no cluster", key)
					continue
				}
				if g := cells(got, row, 2); fmt.Sprint(g) != fmt.Sprint(w) {
					t.Errorf("%s:\n got  %q\n want %q", key, g, w)
				}
			}
			if !sort.StringsAreSorted(keys) {
				t.Errorf("rows are not in cluster/namespace/name order")
			}
		})
	}
}

func columnNames(tb *metav1.Table) []string {
	var out []string
	for _, c := range tb.ColumnDefinitions {
		out = append(out, fmt.Sprintf("%s/%s/%d", c.Name, c.Type, c.Priority))
	}
	return out
}

func rowKey(t *testing.T, row metav1.TableRow) string {
	var m metav1.PartialObjectMetadata
	if err := json.Unmarshal(row.Object.Raw, &m); err != nil {
		t.Fatalf("row object: %v (%s)", err, row.Object.Raw)
	}
	return m.Namespace + "/" + m.Name
}

// cells are a row's cells from column from on, volatile ones as "<volatile>".
func cells(tb *metav1.Table, row metav1.TableRow, from int) []string {
	var out []string
	for i := from; i < len(row.Cells); i++ {
		if volatile(tb.ColumnDefinitions[i].Name, row.Cells[i]) {
			out = append(out, "<volatile>")
			continue
		}
		out = append(out, fmt.Sprintf("%v", row.Cells[i]))
	}
	return out
}

// TestCLITableIsKubectls: `fleetcache get` prints the rows the Kubernetes API gives
// kubectl, with the same columns (one definition, in the daemon), for -o wide too.
func TestCLITableIsKubectls(t *testing.T) {
	d := startDaemon(t)
	k := newFleetKubectl(t, d)
	for _, args := range [][]string{{"pods", "-A"}, {"pods", "-A", "-o", "wide"}, {"deployments", "-n", "payments"}, {"widgets", "-A"}, {"nodes", "-o", "wide"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			resource := args[0]
			if resource == "deployments" || resource == "widgets" {
				resource = map[string]string{"deployments": "deployments.apps", "widgets": "widgets.example.com"}[resource]
			}
			cli := strings.Split(strings.TrimSpace(d.cli(t, append([]string{"get", resource, "--chunk-size", "50"}, args[1:]...)...)), "\n")
			kc := strings.Split(strings.TrimSpace(k.must(t, append([]string{"get"}, args...)...)), "\n")
			if len(cli) != len(kc) || len(cli) < 2 {
				t.Fatalf("CLI printed %d lines, kubectl %d", len(cli), len(kc))
			}
			header := strings.Fields(kc[0])
			if got := strings.Fields(cli[0]); fmt.Sprint(got) != fmt.Sprint(header) {
				t.Errorf("header %v, want kubectl's %v", got, header)
			}
			age := -1
			for i, h := range header {
				if h == "AGE" {
					age = i
				}
			}
			for i := 1; i < len(kc); i++ {
				g, w := strings.Fields(cli[i]), strings.Fields(kc[i])
				if age >= 0 && len(g) == len(w) {
					g[age], w[age] = "", ""
				}
				if fmt.Sprint(g) != fmt.Sprint(w) {
					t.Errorf("line %d:\n got  %q\n want %q", i, cli[i], kc[i])
				}
			}
		})
	}
}
