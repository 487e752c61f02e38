package clusters

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func TestContextFilter(t *testing.T) {
	f := ContextFilter{Include: []string{"prod-*", "staging"}, Exclude: []string{"*-reader"}}
	for ctx, want := range map[string]bool{"prod-eu": true, "staging": true, "prod-eu-reader": false, "dev": false} {
		if got := f.Match(ctx); got != want {
			t.Errorf("Match(%q) = %v, want %v", ctx, got, want)
		}
	}
	if !(ContextFilter{}).Match("anything") {
		t.Error("an empty filter must select every context")
	}
}

func writeKubeconfig(t *testing.T, dir, name string, mutate func(*clientcmdapi.Config)) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	mutate(cfg)
	path := filepath.Join(dir, name)
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadKubeconfigMergesAndFingerprints(t *testing.T) {
	dir := t.TempDir()
	first := writeKubeconfig(t, dir, "a", func(c *clientcmdapi.Config) {
		c.Clusters["one"] = &clientcmdapi.Cluster{Server: "https://one.example:6443"}
		c.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "t1"}
		c.Contexts["one"] = &clientcmdapi.Context{Cluster: "one", AuthInfo: "u"}
	})
	second := writeKubeconfig(t, dir, "b", func(c *clientcmdapi.Config) {
		c.Clusters["two"] = &clientcmdapi.Cluster{Server: "https://two.example:6443"}
		c.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "ignored: the first file wins"}
		c.Contexts["two"] = &clientcmdapi.Context{Cluster: "two", AuthInfo: "u"}
		c.Contexts["dangling"] = &clientcmdapi.Context{Cluster: "three", AuthInfo: "u"}
	})
	targets, err := LoadKubeconfig([]string{first, second}, ContextFilter{Aliases: map[string]string{"two": "second"}})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Target{}
	for _, tg := range targets {
		byName[tg.Name] = tg
	}
	if len(byName) != 3 || byName["second"].Context != "two" {
		t.Fatalf("targets: %+v", targets)
	}
	if got := byName["second"].Config.BearerToken; got != "t1" {
		t.Errorf("merged token %q, want the first file's", got)
	}
	if err := byName["dangling"].Err; err == nil || !strings.Contains(err.Error(), `cluster "three"`) {
		t.Errorf("dangling context: %v", err)
	}

	// Changing one context's credentials changes only its fingerprint.
	before := byName
	if err := os.Remove(second); err != nil {
		t.Fatal(err)
	}
	writeKubeconfig(t, dir, "b", func(c *clientcmdapi.Config) {
		c.Clusters["two"] = &clientcmdapi.Cluster{Server: "https://two.example:6443"}
		c.AuthInfos["u2"] = &clientcmdapi.AuthInfo{Token: "new"}
		c.Contexts["two"] = &clientcmdapi.Context{Cluster: "two", AuthInfo: "u2"}
		c.Contexts["dangling"] = &clientcmdapi.Context{Cluster: "three", AuthInfo: "u"}
	})
	targets, err = LoadKubeconfig([]string{first, second}, ContextFilter{Aliases: map[string]string{"two": "second"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		changed := tg.Fingerprint != before[tg.Name].Fingerprint
		if changed != (tg.Name == "second") {
			t.Errorf("%s: fingerprint changed = %v", tg.Name, changed)
		}
	}
}

func TestLoadKubeconfigErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadKubeconfig([]string{filepath.Join(dir, "missing")}, ContextFilter{}); err == nil {
		t.Error("missing file accepted")
	}
	path := writeKubeconfig(t, dir, "k", func(c *clientcmdapi.Config) {
		c.Clusters["x"] = &clientcmdapi.Cluster{Server: "https://x"}
		c.Contexts["a"] = &clientcmdapi.Context{Cluster: "x"}
		c.Contexts["b"] = &clientcmdapi.Context{Cluster: "x"}
		c.Contexts["arn:aws:eks:eu-west-1:1:cluster/prod"] = &clientcmdapi.Context{Cluster: "x"}
	})
	if _, err := LoadKubeconfig([]string{path}, ContextFilter{Include: []string{"nomatch-*"}}); err == nil || !strings.Contains(err.Error(), "no context selected") {
		t.Errorf("empty selection: %v", err)
	}
	if _, err := LoadKubeconfig([]string{path}, ContextFilter{Aliases: map[string]string{"a": "same", "b": "same"}}); err == nil || !strings.Contains(err.Error(), "both map to") {
		t.Errorf("alias clash: %v", err)
	}
	targets, err := LoadKubeconfig([]string{path}, ContextFilter{Include: []string{"arn:*"}})
	if err != nil {
		t.Fatal(err)
	}
	if targets[0].Err == nil || !strings.Contains(targets[0].Err.Error(), "alias") {
		t.Errorf("a name with '/' must ask for an alias: %v", targets[0].Err)
	}
}
