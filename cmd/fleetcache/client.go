package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/fleetcache/fleetcache/internal/kubeapi"
	"github.com/fleetcache/fleetcache/internal/request"
)

// client talks to a running daemon's /api/v1.
type client struct {
	server string
	http   *http.Client
	out    io.Writer
}

type clientFlags struct {
	fs        *flag.FlagSet
	server    *string
	selector  *string
	fieldSel  *string
	cluster   *string
	namespace *string
	all       *bool
	output    *string
	by        *string
	limit     *int
}

func newClientFlags(name string) *clientFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	f := &clientFlags{fs: fs}
	f.server = fs.String("server", envOr("FLEETCACHE_SERVER", "http://127.0.0.1:8080"), "fleetcache daemon URL (env FLEETCACHE_SERVER)")
	f.selector = fs.String("l", "", "label selector, as kubectl -l")
	fs.StringVar(f.selector, "selector", "", "label selector (same as -l)")
	f.fieldSel = fs.String("field-selector", "", "field selector on any field path, e.g. status.phase=Running")
	f.cluster = fs.String("cluster", "", "cluster name or glob (default: all)")
	f.namespace = fs.String("n", "", "namespace (default: all)")
	fs.StringVar(f.namespace, "namespace", "", "namespace (same as -n)")
	f.all = fs.Bool("A", false, "all namespaces (the default; for kubectl habits)")
	f.output = fs.String("o", "", "output: wide, json, yaml or name (default: table)")
	f.by = fs.String("by", "cluster", "count: group by cluster,namespace,label:KEY,field:PATH")
	f.limit = fs.Int("chunk-size", 5000, "objects per request; pages are followed to the end")
	return f
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// parseInterspersed parses flags that may come after the positional arguments, as
// kubectl allows ("get pods -A").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runClient(cmd string, args []string) error {
	f := newClientFlags(cmd)
	pos, err := parseInterspersed(f.fs, args)
	if err != nil {
		return err
	}
	c := &client{server: strings.TrimRight(*f.server, "/"), http: &http.Client{}, out: os.Stdout}
	if cmd != "watch" { // a watch prints each event as it comes
		// Buffered: a table of 100k rows would otherwise be 100k write calls.
		out := bufio.NewWriterSize(os.Stdout, 64<<10)
		defer out.Flush()
		c.out = out
	}
	switch cmd {
	case "clusters":
		return c.clusters()
	case "kubeconfig":
		return c.kubeconfig()
	case "get", "watch", "count":
		if len(pos) != 1 {
			return fmt.Errorf("usage: fleetcache %s RESOURCE [flags]", cmd)
		}
	}
	q := url.Values{"resource": {pos[0]}}
	for k, v := range map[string]string{"labelSelector": *f.selector, "fieldSelector": *f.fieldSel, "cluster": *f.cluster, "namespace": *f.namespace} {
		if v != "" {
			q.Set(k, v)
		}
	}
	switch cmd {
	case "get":
		return c.get(q, *f.output, *f.limit)
	case "count":
		q.Set("groupBy", *f.by)
		return c.count(q)
	case "watch":
		return c.watch(q, *f.output)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// apiErr is the daemon's error body.
type apiErr = request.APIError

func (c *client) do(path string, q url.Values, into any) error {
	resp, err := c.http.Get(c.server + path + "?" + q.Encode())
	if err != nil {
		return fmt.Errorf("is the daemon running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e apiErr
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Message != "" {
			return fmt.Errorf("%s (%d %s)", e.Message, e.Code, e.Reason)
		}
		return fmt.Errorf("%s %s: %s", path, q.Encode(), resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

type freshness struct {
	Cluster          string     `json:"cluster"`
	Phase            string     `json:"phase"`
	Reason           string     `json:"reason"`
	ResourcePhase    string     `json:"resourcePhase"`
	ResourceReason   string     `json:"resourceReason"`
	StalenessSeconds *float64   `json:"stalenessSeconds"`
	LastEventTime    *time.Time `json:"lastEventTime"`
	Message          string     `json:"message"`
}

// staleness prints a staleness bound for people: "1.2s", "<unproven>".
func staleness(secs *float64) string {
	if secs == nil {
		return "<unproven>"
	}
	return (time.Duration(*secs * float64(time.Second))).Round(100 * time.Millisecond).String()
}

type listPage struct {
	Resource struct {
		Name, Kind string
	} `json:"resource"`
	Clusters []freshness `json:"clusters"`
	Partial  bool        `json:"partial"`
	Items    []struct {
		Cluster string          `json:"cluster"`
		Object  json.RawMessage `json:"object"`
	} `json:"items"`
	Continue string `json:"continue"`
}

type row struct {
	cluster string
	obj     *unstructured.Unstructured
}

// tablePage is a page of /api/v1/objects?format=table: the server's Table rows, whose
// columns are those the Kubernetes API gives kubectl (one definition, in the daemon).
type tablePage struct {
	Resource struct {
		Name, Kind string
		Namespaced bool
	} `json:"resource"`
	Clusters []freshness  `json:"clusters"`
	Table    metav1.Table `json:"table"`
	Continue string       `json:"continue"`
}

func (c *client) get(q url.Values, output string, chunk int) error {
	q.Set("limit", fmt.Sprint(chunk))
	switch output {
	case "", "wide":
		return c.getTable(q, output == "wide")
	case "json", "yaml", "name":
	default:
		return fmt.Errorf("unknown output %q: want wide, json, yaml or name", output)
	}
	var rows []row
	var last listPage
	for {
		var page listPage
		if err := c.do("/api/v1/objects", q, &page); err != nil {
			return err
		}
		for _, it := range page.Items {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(it.Object); err != nil {
				return err
			}
			rows = append(rows, row{it.Cluster, u})
		}
		last = page
		if page.Continue == "" {
			break
		}
		q.Set("continue", page.Continue)
	}
	if err := printRows(c.out, rows, output); err != nil {
		return err
	}
	warnPartial(last.Clusters)
	return nil
}

// getTable asks the daemon for table rows, not objects, and prints them as kubectl does.
func (c *client) getTable(q url.Values, wide bool) error {
	q.Set("format", "table")
	var table *metav1.Table
	var last tablePage
	for {
		var page tablePage
		if err := c.do("/api/v1/objects", q, &page); err != nil {
			return err
		}
		if table == nil {
			table = &page.Table
		} else {
			table.Rows = append(table.Rows, page.Table.Rows...)
		}
		last = page
		if page.Continue == "" {
			break
		}
		q.Set("continue", page.Continue)
	}
	warnPartial(last.Clusters)
	if len(table.Rows) == 0 {
		fmt.Fprintln(os.Stderr, "No resources found")
		return nil
	}
	// The printer reads each row's namespace from its object metadata (name and
	// namespace only, in these rows).
	for i := range table.Rows {
		var row struct {
			Metadata struct{ Name, Namespace string } `json:"metadata"`
		}
		if err := json.Unmarshal(table.Rows[i].Object.Raw, &row); err != nil {
			return fmt.Errorf("decode row %d: %w", i, err)
		}
		table.Rows[i].Object.Object = &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: row.Metadata.Name, Namespace: row.Metadata.Namespace}}
	}
	withNamespace := last.Resource.Namespaced && q.Get("namespace") == ""
	return printers.NewTablePrinter(printers.PrintOptions{Wide: wide, WithNamespace: withNamespace}).PrintObj(table, c.out)
}

func printRows(w io.Writer, rows []row, output string) error {
	switch output {
	case "json", "yaml":
		list := map[string]any{"apiVersion": "v1", "kind": "List", "items": itemsOf(rows)}
		if output == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "    ")
			return enc.Encode(list)
		}
		raw, err := yaml.Marshal(list)
		if err != nil {
			return err
		}
		_, err = w.Write(raw)
		return err
	case "name":
		for _, r := range rows {
			fmt.Fprintf(w, "%s/%s/%s\n", r.cluster, strings.ToLower(r.obj.GetKind()), r.obj.GetName())
		}
		return nil
	}
	return fmt.Errorf("unknown output %q: want wide, json, yaml or name", output)
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// warnPartial tells, on stderr, which clusters' parts of the answer may be incomplete.
func warnPartial(fs []freshness) {
	for _, f := range fs {
		if f.Phase != "Synced" || (f.ResourcePhase != "Synced" && f.ResourcePhase != "NotServed" && f.ResourcePhase != "") {
			fmt.Fprintf(os.Stderr, "warning: cluster %s is %s %s (resource %s %s), proven current only up to %s ago: its part of the answer may be missing or stale. %s\n",
				f.Cluster, f.Phase, f.Reason, f.ResourcePhase, f.ResourceReason, staleness(f.StalenessSeconds), f.Message)
		}
	}
}

// itemsOf tags each object with its cluster, as the annotation fleetcache.io/cluster.
func itemsOf(rows []row) []any {
	out := make([]any, 0, len(rows))
	for _, r := range rows {
		obj := r.obj.DeepCopy()
		ann := obj.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[ClusterAnnotation] = r.cluster
		obj.SetAnnotations(ann)
		out = append(out, obj.Object)
	}
	return out
}

// ClusterAnnotation carries an object's cluster in JSON and YAML output, as the
// daemon's Kubernetes API writes it.
const ClusterAnnotation = kubeapi.ClusterAnnotation

func (c *client) count(q url.Values) error {
	var res struct {
		GroupBy []string `json:"groupBy"`
		Groups  []struct {
			Values []string `json:"values"`
			Count  int      `json:"count"`
		} `json:"groups"`
		Total    int         `json:"total"`
		Clusters []freshness `json:"clusters"`
	}
	if err := c.do("/api/v1/count", q, &res); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 3, ' ', 0)
	for _, k := range res.GroupBy {
		fmt.Fprint(tw, strings.ToUpper(k)+"\t")
	}
	fmt.Fprintln(tw, "COUNT")
	for _, g := range res.Groups {
		for _, v := range g.Values {
			fmt.Fprint(tw, orNone(v)+"\t")
		}
		fmt.Fprintln(tw, g.Count)
	}
	fmt.Fprint(tw, strings.Repeat("\t", len(res.GroupBy)-1))
	fmt.Fprintf(tw, "TOTAL\t%d\n", res.Total)
	warnPartial(res.Clusters)
	return tw.Flush()
}

func (c *client) clusters() error {
	var res struct {
		Clusters []struct {
			Name               string     `json:"name"`
			Phase              string     `json:"phase"`
			Reason             string     `json:"reason"`
			Message            string     `json:"message"`
			Server             string     `json:"server"`
			Version            string     `json:"version"`
			LastTransitionTime time.Time  `json:"lastTransitionTime"`
			LastProbeTime      *time.Time `json:"lastProbeTime"`
			StalenessSeconds   *float64   `json:"stalenessSeconds"`
			Resources          []struct {
				Objects       int        `json:"objects"`
				LastEventTime *time.Time `json:"lastEventTime"`
			} `json:"resources"`
		} `json:"clusters"`
		LoadError string `json:"loadError"`
	}
	if err := c.do("/api/v1/clusters", url.Values{}, &res); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 3, ' ', 0)
	// STALENESS: the cache held everything the cluster had this long ago (the largest
	// bound of its resources); see the README's Freshness section.
	fmt.Fprintln(tw, "CLUSTER\tPHASE\tSINCE\tOBJECTS\tSTALENESS\tLAST EVENT\tVERSION\tSERVER\tMESSAGE")
	for _, cl := range res.Clusters {
		objects := 0
		var lastEvent time.Time
		for _, r := range cl.Resources {
			objects += r.Objects
			if r.LastEventTime != nil && r.LastEventTime.After(lastEvent) {
				lastEvent = *r.LastEventTime
			}
		}
		ago := "<never>"
		if !lastEvent.IsZero() {
			ago = duration.HumanDuration(time.Since(lastEvent)) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", cl.Name, cl.Phase, duration.HumanDuration(time.Since(cl.LastTransitionTime)),
			objects, staleness(cl.StalenessSeconds), ago, orNone(cl.Version), cl.Server, cl.Message)
	}
	if res.LoadError != "" {
		fmt.Fprintln(os.Stderr, "warning: kubeconfig could not be reloaded:", res.LoadError)
	}
	return tw.Flush()
}

func (c *client) watch(q url.Values, output string) error {
	resp, err := c.http.Get(c.server + "/api/v1/watch?" + q.Encode())
	if err != nil {
		return fmt.Errorf("is the daemon running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e apiErr
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s (%d %s)", e.Message, e.Code, e.Reason)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	tw := tabwriter.NewWriter(c.out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "EVENT\tCLUSTER\tNAMESPACE\tNAME\tRESOURCEVERSION")
	tw.Flush()
	for sc.Scan() {
		if output == "json" {
			fmt.Fprintln(c.out, sc.Text())
			continue
		}
		var line struct {
			Type            string          `json:"type"`
			Cluster         string          `json:"cluster"`
			ResourceVersion string          `json:"resourceVersion"`
			Object          json.RawMessage `json:"object"`
			Error           *apiErr         `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return err
		}
		switch line.Type {
		case "BOOKMARK":
			continue
		case "ERROR":
			return errors.New(line.Error.Message)
		}
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		_ = json.Unmarshal(line.Object, &meta)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", line.Type, line.Cluster, orNone(meta.Metadata.Namespace), meta.Metadata.Name, line.ResourceVersion)
		tw.Flush()
	}
	return sc.Err()
}

// kubeconfig prints a kubeconfig whose contexts read the fleet through the daemon's
// Kubernetes API: "fleet" for every cluster, "fleet-<cluster>" for one.
func (c *client) kubeconfig() error {
	var res struct {
		Clusters []struct {
			Name string `json:"name"`
		} `json:"clusters"`
	}
	if err := c.do("/api/v1/clusters", url.Values{}, &res); err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	add := func(ctx, path string) {
		cfg.Clusters[ctx] = &clientcmdapi.Cluster{Server: c.server + path}
		cfg.Contexts[ctx] = &clientcmdapi.Context{Cluster: ctx, AuthInfo: "fleetcache"}
	}
	cfg.AuthInfos["fleetcache"] = &clientcmdapi.AuthInfo{}
	add("fleet", "/fleet")
	for _, cl := range res.Clusters {
		add("fleet-"+cl.Name, "/clusters/"+cl.Name)
	}
	cfg.CurrentContext = "fleet"
	raw, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	_, err = c.out.Write(raw)
	return err
}
