package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/invokeari/invokeari/stasisapp/sim"
)

// Simulated phones of the benchmark. Their names are not in the demo set, so a bench
// run never collides with a demo or recorded endpoint.
const (
	benchBusy   = "PJSIP/bench-busy"   // 486 at once: the call ends within milliseconds
	benchAnswer = "PJSIP/bench-answer" // answers after benchRing
	benchRing   = "PJSIP/bench-ring"   // rings until the originate timeout (or our DELETE)

	benchRingTime = 200 * time.Millisecond
	benchContext  = "bench" // dialplan context the answered bench calls continue into
)

// benchEndpoints are the simulator's endpoints for a bench run.
func benchEndpoints() map[string]sim.Behavior {
	return map[string]sim.Behavior{
		benchBusy:   {Result: sim.Busy},
		benchAnswer: {Result: sim.Answer, AnswerAfter: benchRingTime},
		benchRing:   {Result: sim.RingForever},
	}
}

// simURLPrefix starts the line on which a sim child announces its ARI URL.
const simURLPrefix = "bench-sim-ari-url "

// runSimChild is the child half of the bench: the simulator in its own process, so its
// CPU and heap are not the daemon's. It stops when ctx ends or its stdin closes (the
// parent died or is done).
func runSimChild(ctx context.Context, user, pass string, stdin io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := sim.New(sim.Config{Addr: "127.0.0.1:0", Username: user, Password: pass,
		Endpoints: benchEndpoints(), Contexts: map[string][]string{benchContext: {"s"}}})
	if err := s.Start(ctx); err != nil {
		return fmt.Errorf("bench simulator: %w", err)
	}
	defer s.Close()
	fmt.Fprintf(out, "%s%s\n", simURLPrefix, s.URL())
	stdinClosed := make(chan struct{})
	go func() { // ends at stdin EOF; in the child the process exit follows runSimChild at once
		_, _ = io.Copy(io.Discard, stdin)
		close(stdinClosed)
	}()
	select {
	case <-ctx.Done():
	case <-stdinClosed:
	}
	return nil
}

// simProcess is the simulator child process.
type simProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	url   string
	done  chan error
}

// startSimProcess runs `exe bench -sim-child` and waits until it announces its URL.
func startSimProcess(ctx context.Context, exe, user, pass string, stderr io.Writer) (*simProcess, error) {
	cmd := exec.Command(exe, "bench", "-sim-child", "-sim-user", user, "-sim-pass", pass)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start simulator process %s: %w", exe, err)
	}
	p := &simProcess{cmd: cmd, stdin: stdin, done: make(chan error, 1)}
	urls := make(chan string, 1)
	go func() { // owned by simProcess: ends when the child's stdout closes (child exit)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), simURLPrefix); ok {
				urls <- u
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case p.url = <-urls:
		return p, nil
	case err := <-p.done:
		return nil, fmt.Errorf("simulator process exited before serving: %v", err)
	case <-time.After(20 * time.Second):
		p.stop()
		return nil, errors.New("simulator process did not announce its URL within 20s")
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
}

// stop ends the child: stdin closes (it exits on its own), then a kill after 3s.
func (p *simProcess) stop() {
	_ = p.stdin.Close()
	select {
	case <-p.done:
		return
	case <-time.After(3 * time.Second):
	}
	_ = p.cmd.Process.Signal(os.Kill)
	<-p.done
}
