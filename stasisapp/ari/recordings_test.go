package ari

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// recordingsDir holds real Asterisk 22.10.1 traffic (see its README.md).
const recordingsDir = "../../testdata/ari/recordings"

// recLine is one line of a recording: a REST exchange, a websocket event or a note.
type recLine struct {
	Kind            string            `json:"kind"`
	Conn            string            `json:"conn"`
	Method          string            `json:"method"`
	Path            string            `json:"path"`
	Status          int               `json:"status"`
	ResponseBody    json.RawMessage   `json:"response_body"`
	ResponseHeaders map[string]string `json:"response_headers"`
	Event           json.RawMessage   `json:"event"`
}

func loadRecording(tb testing.TB, name string) []recLine {
	tb.Helper()
	f, err := os.Open(filepath.Join(recordingsDir, name))
	if err != nil {
		tb.Fatalf("open recording: %v", err)
	}
	defer f.Close()
	var lines []recLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var l recLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return lines
}

// recordingFiles lists every transcript (*.jsonl), sorted.
func recordingFiles(tb testing.TB) []string {
	tb.Helper()
	names, err := filepath.Glob(filepath.Join(recordingsDir, "*.jsonl"))
	if err != nil || len(names) == 0 {
		tb.Fatalf("no recordings in %s (err %v)", recordingsDir, err)
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	sort.Strings(names)
	return names
}

// frame is one recorded websocket message, byte for byte as a compact JSON object.
type frame struct {
	file string
	data []byte
}

func compact(tb testing.TB, raw json.RawMessage) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		tb.Fatalf("compact: %v", err)
	}
	return b.Bytes()
}

// wsFrames returns the websocket events of one recording (all connections).
func wsFrames(tb testing.TB, name string) []frame {
	tb.Helper()
	var out []frame
	for _, l := range loadRecording(tb, name) {
		if l.Kind == "ws" {
			out = append(out, frame{file: name, data: compact(tb, l.Event)})
		}
	}
	return out
}

// allFrames returns every websocket event of every recording.
func allFrames(tb testing.TB) []frame {
	tb.Helper()
	var out []frame
	for _, name := range recordingFiles(tb) {
		out = append(out, wsFrames(tb, name)...)
	}
	if len(out) == 0 {
		tb.Fatal("no websocket events in recordings")
	}
	return out
}

// findREST returns the first REST exchange of a recording matching method, status and
// path (paths start with /ari). A path ending in "/" matches as a prefix.
func findREST(tb testing.TB, name, method, path string, status int) recLine {
	tb.Helper()
	for _, l := range loadRecording(tb, name) {
		pathOK := l.Path == path || strings.HasSuffix(path, "/") && strings.HasPrefix(l.Path, path)
		if l.Kind == "rest" && l.Method == method && l.Status == status && pathOK {
			return l
		}
	}
	tb.Fatalf("%s: no %s %s with status %d", name, method, path, status)
	return recLine{}
}
