package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const callsUsage = `usage: invokeari calls <get ID | list | hangup ID> [flags]

  get ID       print the call's record (GET /v2/calls/{id})
  list         print a page of calls, newest first (GET /v2/calls)
  hangup ID    hang the call up and print how it ended (DELETE /v2/calls/{id})
`

// runCalls is `invokeari calls`: call control over HTTP against the daemon.
func runCalls(ctx context.Context, args []string, out io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(out, callsUsage)
		return errors.New("calls: a subcommand is required")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("calls "+sub, flag.ContinueOnError)
	fs.SetOutput(out)
	base := fs.String("url", orDefault(getenv("INVOKEARI_URL"), "http://127.0.0.1:8080"), "the daemon's HTTP base URL (env INVOKEARI_URL)")
	key := fs.String("key", orDefault(getenv("INVOKEARI_API_KEY"), demoKey), "API key (env INVOKEARI_API_KEY)")
	var state, server, limit, cursor, reason *string
	switch sub {
	case "list":
		state = fs.String("state", "", "active or ended (default: both)")
		server = fs.String("server", "", "only calls on this server")
		limit = fs.String("limit", "", "page size, 1-500 (default 50)")
		cursor = fs.String("cursor", "", "next_cursor of the previous page")
	case "hangup":
		reason = fs.String("reason", "", "your reason, kept in the call record")
	case "get":
	case "help", "-h", "--help":
		fmt.Fprint(out, callsUsage)
		return nil
	default:
		fmt.Fprint(out, callsUsage)
		return fmt.Errorf("calls: unknown subcommand %q", sub)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	method, path, q := http.MethodGet, "/v2/calls", url.Values{}
	if sub == "list" {
		if fs.NArg() != 0 {
			return errors.New("usage: invokeari calls list [-state active|ended] [-server NAME] [-limit N] [-cursor C]")
		}
		for name, v := range map[string]string{"state": *state, "server": *server, "limit": *limit, "cursor": *cursor} {
			if v != "" {
				q.Set(name, v)
			}
		}
	} else {
		if fs.NArg() != 1 {
			return fmt.Errorf("usage: invokeari calls %s [flags] ID", sub)
		}
		path += "/" + url.PathEscape(fs.Arg(0))
		if sub == "hangup" {
			method = http.MethodDelete
			if *reason != "" {
				q.Set("reason", *reason)
			}
		}
	}
	u := strings.TrimSuffix(*base, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return callsRequest(ctx, method, u, *key, out)
}

// callsRequest sends one call-control request and prints the reply, indented. A
// non-2xx reply is printed too, and returned as an error (exit status 1).
func callsRequest(ctx context.Context, method, u, key string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, b, "", "  ") == nil {
		b = pretty.Bytes()
	}
	fmt.Fprintf(out, "%s\n", bytes.TrimSpace(b))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d", method, req.URL.Path, resp.StatusCode)
	}
	return nil
}
