package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// An instance id names one daemon among several sharing a NATS cluster: its lease key,
// the owner written on its calls, its default Stasis app name and the name of its
// embedded NATS server. It is a subject token, so it may stand in NATS subjects and keys.
var instanceIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func validInstanceID(s string) bool { return instanceIDRe.MatchString(s) }

// defaultApp is the Stasis app name of a server whose `app` is not configured: one per
// instance, so that two daemons on one Asterisk never take each other's app (SPEC §4b.7).
func defaultApp(instance string) string {
	if instance == "" {
		return "invokeari"
	}
	return "invokeari-" + instance
}

// resolveInstanceID sets c.InstanceID when the config leaves it out: the id kept in
// instance_id_file, or a new one (host name + a random suffix) written there, so a
// restarted daemon is the same instance and finds its calls under the same app name.
func (c *Config) resolveInstanceID(hostname func() (string, error)) error {
	if c.InstanceID != "" {
		return nil
	}
	path := c.InstanceIDFile
	if path == "" {
		path = filepath.Join(filepath.Dir(orDefault(c.NATS.Embedded.StoreDir, "./data/nats")), "instance-id")
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(b))
		if !validInstanceID(id) {
			return fmt.Errorf("instance_id_file %s: %q is not an instance id", path, id)
		}
		c.InstanceID = id
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("instance_id_file: %w", err)
	}
	host, err := hostname()
	if err != nil || host == "" {
		host = "invokeari"
	}
	var suffix [3]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return fmt.Errorf("instance id: %w", err)
	}
	id := sanitizeHost(host) + "-" + hex.EncodeToString(suffix[:])
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("instance_id_file: %w", err)
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return fmt.Errorf("instance_id_file: %w", err)
	}
	c.InstanceID = id
	return nil
}

// sanitizeHost keeps a host name's first label usable in an instance id.
func sanitizeHost(host string) string {
	host, _, _ = strings.Cut(host, ".")
	b := []byte(host)
	for i, ch := range b {
		ok := ch == '-' || ch == '_' || ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z'
		if !ok {
			b[i] = '-'
		}
	}
	if len(b) > 48 {
		b = b[:48]
	}
	if len(b) == 0 {
		return "invokeari"
	}
	return string(b)
}
