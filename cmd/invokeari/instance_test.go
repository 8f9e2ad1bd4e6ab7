package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstanceIDDerivedKeptAndAppPerInstance(t *testing.T) {
	dir := t.TempDir()
	host := func() (string, error) { return "pbx-host.example.com", nil }
	var a Config
	a.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
	if err := a.resolveInstanceID(host); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.InstanceID, "pbx-host-") || !validInstanceID(a.InstanceID) {
		t.Fatalf("derived instance id %q, want pbx-host-<suffix>", a.InstanceID)
	}
	b, err := os.ReadFile(filepath.Join(dir, "instance-id"))
	if err != nil || strings.TrimSpace(string(b)) != a.InstanceID {
		t.Fatalf("instance-id file = %q, %v; want %q", b, err, a.InstanceID)
	}
	// A restart reads the same id back.
	var again Config
	again.NATS.Embedded.StoreDir = a.NATS.Embedded.StoreDir
	if err := again.resolveInstanceID(host); err != nil || again.InstanceID != a.InstanceID {
		t.Fatalf("restarted instance id %q, %v; want %q", again.InstanceID, err, a.InstanceID)
	}
	// Another data dir is another instance.
	var other Config
	other.InstanceIDFile = filepath.Join(dir, "other", "id")
	if err := other.resolveInstanceID(host); err != nil || other.InstanceID == a.InstanceID {
		t.Fatalf("second instance id %q, %v; want one different from %q", other.InstanceID, err, a.InstanceID)
	}
	// The app name derives from the instance unless configured.
	a.Asterisk = []AsteriskConfig{{Name: "pbx1"}, {Name: "pbx2", App: "mine"}}
	a.applyDefaults()
	if got, want := a.Asterisk[0].App, "invokeari-"+a.InstanceID; got != want {
		t.Errorf("derived app = %q, want %q", got, want)
	}
	if got := a.Asterisk[1].App; got != "mine" {
		t.Errorf("configured app = %q, want mine", got)
	}
	if a.NATS.Replicas != 1 {
		t.Errorf("default nats.replicas = %d, want 1", a.NATS.Replicas)
	}
}

func TestInstanceIDAndClusterValidation(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"bad instance id", func(c *Config) { c.InstanceID = "has.dot" }, "instance_id"},
		{"replicas", func(c *Config) { c.NATS.Replicas = 7 }, "nats.replicas"},
		{"cluster without routes", func(c *Config) {
			c.NATS.Embedded.Cluster = &ClusterConfig{Name: "c", Listen: "127.0.0.1:6222"}
		}, "nats.embedded.cluster"},
		{"cluster with url", func(c *Config) {
			c.NATS.URL = "nats://127.0.0.1:4222"
			c.NATS.Embedded.Cluster = &ClusterConfig{Name: "c", Listen: "127.0.0.1:6222", Routes: []string{"nats-route://127.0.0.1:6223"}}
		}, "nats.embedded.cluster"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{InstanceID: "i1"}
			c.applyDefaults()
			tt.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
