package main

import (
	"strings"
	"testing"
)

// TestMaxConnectionsConfig: the example documents asterisk[].max_connections and loads;
// a value out of range is refused naming the field.
func TestMaxConnectionsConfig(t *testing.T) {
	c, err := loadConfig("../../configs/invokeari.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Asterisk) == 0 || c.Asterisk[0].MaxConnections != 32 {
		t.Fatalf("example asterisk[0].max_connections = %+v, want 32", c.Asterisk)
	}
	for _, tt := range []struct {
		n       int
		wantErr bool
	}{{0, false}, {32, false}, {-1, true}, {5000, true}} {
		c.Asterisk[0].MaxConnections = tt.n
		err := c.Validate()
		if got := err != nil && strings.Contains(err.Error(), "asterisk[0].max_connections"); got != tt.wantErr {
			t.Errorf("max_connections %d: err = %v, want an error naming it: %v", tt.n, err, tt.wantErr)
		}
	}
}
