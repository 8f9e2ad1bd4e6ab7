package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeSnippets returns the js, python and go code blocks of README.md's section
// "Verifying a callback's signature", exactly as written.
func readmeSnippets(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(data), "### Verifying a callback's signature")
	if !ok {
		t.Fatal("README.md has no section \"Verifying a callback's signature\"")
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	out := map[string]string{}
	for _, m := range regexp.MustCompile("(?s)```(js|python|go)\n(.*?)```").FindAllStringSubmatch(sec, -1) {
		out[m[1]] = m[2]
	}
	for _, lang := range []string{"js", "python", "go"} {
		if out[lang] == "" {
			t.Fatalf("README section lacks a %s snippet", lang)
		}
	}
	return out
}

// Drivers: read JSON lines {secret, header, body} (base64 body and secret) and print
// true/false per line, calling the README's function unchanged.
const (
	jsDriver = `
const lines = require("node:fs").readFileSync(0, "utf8").split("\n").filter(Boolean);
for (const l of lines) {
  const c = JSON.parse(l);
  console.log(verifyInvokeari(Buffer.from(c.secret, "base64"), c.header, Buffer.from(c.body, "base64")));
}
`
	pyDriver = `
import base64, json, sys
for line in sys.stdin:
    c = json.loads(line)
    print(str(verify_invokeari(base64.b64decode(c["secret"]), c["header"], base64.b64decode(c["body"]))).lower())
`
	goDriver = `package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c struct{ Secret, Header, Body []byte }
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			panic(err)
		}
		fmt.Println(verifyInvokeari(c.Secret, string(c.Header), c.Body))
	}
}
`
)

func TestREADMESignatureSnippets(t *testing.T) {
	snips := readmeSnippets(t)
	secret := []byte("whsec-readme-\x00-bytes")
	body := []byte(`{"id":"c1","seq":4,"event":"ended","request":{"i":"\"Zoë\" <6001>"}}`)
	now := time.Now()
	type tc struct {
		name   string
		secret []byte
		header string
		body   []byte
		want   bool
	}
	cases := []tc{
		{"genuine", secret, Sign(secret, now, body), body, true},
		{"genuine, 4 minutes old", secret, Sign(secret, now.Add(-4*time.Minute), body), body, true},
		{"forged: body altered", secret, Sign(secret, now, body), bytes.Replace(body, []byte("ended"), []byte("answered"), 1), false},
		{"forged: other secret", secret, Sign([]byte("guess"), now, body), body, false},
		{"forged: t moved", secret, strings.Replace(Sign(secret, now.Add(-10*time.Minute), body), fmt.Sprint(now.Add(-10*time.Minute).Unix()), fmt.Sprint(now.Unix()), 1), body, false},
		{"stale: 10 minutes old", secret, Sign(secret, now.Add(-10*time.Minute), body), body, false},
		{"future: 10 minutes ahead", secret, Sign(secret, now.Add(10*time.Minute), body), body, false},
		{"malformed", secret, "garbage", body, false},
		{"no v1", secret, "t=" + fmt.Sprint(now.Unix()), body, false},
	}
	// The same answers from webhook.Verify keep the snippets and the package in step.
	for _, c := range cases {
		if got := Verify(c.secret, c.header, c.body, time.Now(), DefaultMaxAge) == nil; got != c.want {
			t.Errorf("webhook.Verify %s = %v; want %v", c.name, got, c.want)
		}
	}
	var in bytes.Buffer
	for _, c := range cases {
		line, _ := json.Marshal(map[string]string{"secret": base64.StdEncoding.EncodeToString(c.secret), "header": c.header,
			"body": base64.StdEncoding.EncodeToString(c.body)})
		in.Write(append(line, '\n'))
	}
	goIn := &bytes.Buffer{}
	for _, c := range cases {
		line, _ := json.Marshal(map[string][]byte{"Secret": c.secret, "Header": []byte(c.header), "Body": c.body})
		goIn.Write(append(line, '\n'))
	}

	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goDir := filepath.Join(dir, "gosnippet")
	if err := os.MkdirAll(goDir, 0o700); err != nil {
		t.Fatal(err)
	}
	write("gosnippet/snippet.go", snips["go"])
	write("gosnippet/driver.go", goDriver)
	write("gosnippet/go.mod", "module snippet\n\ngo 1.22\n")
	runs := []struct {
		lang, tool string
		args       []string
		stdin      []byte
		dir        string
	}{
		{"js", "node", []string{write("snippet.js", snips["js"]+jsDriver)}, in.Bytes(), dir},
		{"python", "python3", []string{write("snippet.py", snips["python"]+pyDriver)}, in.Bytes(), dir},
		{"go", "go", []string{"run", "."}, goIn.Bytes(), goDir},
	}
	for _, r := range runs {
		path, err := exec.LookPath(r.tool)
		if err != nil {
			t.Fatalf("%s is required to run the README's %s snippet: %v", r.tool, r.lang, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, path, r.args...)
		cmd.Dir = r.dir
		cmd.Stdin = bytes.NewReader(r.stdin)
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		out, err := cmd.Output()
		cancel()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("%s snippet: %v\n%s%s", r.lang, err, out, stderr)
		}
		got := strings.Fields(string(out))
		if len(got) != len(cases) {
			t.Fatalf("%s snippet printed %q; want %d answers", r.lang, out, len(cases))
		}
		for i, c := range cases {
			if got[i] != fmt.Sprint(c.want) {
				t.Errorf("%s snippet, %s: %s; want %v", r.lang, c.name, got[i], c.want)
			}
		}
	}
}
