// Command invokeari is the daemon that places calls through Asterisk's ARI and reports
// their outcome over HTTP and NATS. Subcommands: serve, sim, call, calls, watch, bench,
// hash-key.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: invokeari <command> [flags]

commands:
  serve      run the daemon (no config and no Asterisk: embedded NATS + built-in Asterisk simulator)
  sim        run the Asterisk simulator alone (ARI on 127.0.0.1:8088)
  call       place a call over HTTP or NATS and print its progress
  calls      look a call up, list calls, hang one up: calls get ID | calls list | calls hangup ID
  watch      follow call events live, or replay them from the stream
  bench      run the published benchmark and write BENCHMARKS.md
  hash-key   print the sha256 of an API key for the config's keys[].sha256
  nats-node  run one NATS cluster node with JetStream (a cluster machine without a daemon)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	// First signal: graceful stop (drain). Second signal: stop hard.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
		hard := make(chan os.Signal, 1)
		signal.Notify(hard, os.Interrupt, syscall.SIGTERM)
		<-hard
		fmt.Fprintln(os.Stderr, "invokeari: second signal, stopping now")
		os.Exit(1)
	}()
	err := run(ctx, os.Args[1], os.Args[2:], os.Stdout, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "invokeari:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd string, args []string, out io.Writer, getenv func(string) string) error {
	switch cmd {
	case "serve":
		return serve(ctx, args, out, getenv)
	case "sim":
		return runSim(ctx, args, out)
	case "call":
		return runCall(ctx, args, out, getenv)
	case "calls":
		return runCalls(ctx, args, out, getenv)
	case "watch":
		return runWatch(ctx, args, out, getenv)
	case "bench":
		return runBench(ctx, args, out)
	case "hash-key":
		return hashKey(args, out)
	case "nats-node":
		return runNATSNode(ctx, args, out)
	case "help", "-h", "--help":
		fmt.Fprint(out, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}

func hashKey(args []string, out io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: invokeari hash-key KEY")
	}
	sum := sha256.Sum256([]byte(args[0]))
	fmt.Fprintln(out, hex.EncodeToString(sum[:]))
	return nil
}
