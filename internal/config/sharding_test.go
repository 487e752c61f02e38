package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func kubeconfigFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestShardedOverlayConfigInAPod(t *testing.T) {
	c, err := Load("../../deploy/overlays/sharded/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", "fleetcache-1")
	t.Setenv("POD_IP", "10.1.2.3")
	c.Kubeconfig = []string{kubeconfigFile(t)}
	c.Auth.TokenFile = c.Kubeconfig[0] // exists; its content is not read here
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s := c.Sharding
	if !s.Enabled() || s.Identity != "fleetcache-1" || s.AdvertiseURL != "http://10.1.2.3:8080" || s.Replicas != 2 || s.Namespace != "fleetcache" || s.LeaseDuration.Duration.Seconds() != 15 {
		t.Errorf("sharding read wrongly: %+v", s)
	}
}

func TestShardingOffByDefault(t *testing.T) {
	c := &Config{Kubeconfig: []string{kubeconfigFile(t)}}
	c.SetDefaults()
	if c.Sharding.Enabled() || c.Sharding.Identity != "" {
		t.Errorf("sharding on without a home: %+v", c.Sharding)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestShardingErrorsNameTheField(t *testing.T) {
	raw := `
listen: 0.0.0.0:8080
auth: {insecureAllowUnauthenticated: true}
sharding:
  homeContext: home
  identity: Not_DNS
  leaseDuration: 1s
  replicas: -1
`
	c, err := Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	c.Kubeconfig = []string{kubeconfigFile(t)}
	t.Setenv("POD_IP", "")
	c.SetDefaults()
	err = c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"sharding.namespace", "sharding.identity", "sharding.advertiseURL", "sharding.leaseDuration", "sharding.replicas"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}
