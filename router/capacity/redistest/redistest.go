// Package redistest starts throw-away redis-server processes for tests: a
// single node (StartServer) or a three-master Redis Cluster (StartCluster),
// each on free 127.0.0.1 ports, with no persistence, killed by t.Cleanup.
// A missing redis-server fails the test with a clear message (never a skip):
// scripts/test.sh installs it.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is one running redis-server.
type Server struct {
	t    testing.TB
	Port int
	dir  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// URL is redis://127.0.0.1:port/0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

func binary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH: install it (apt-get install -y redis-server) or run ./scripts/test.sh, which does", name)
	}
	return p
}

// FreePort returns a currently unused TCP port on 127.0.0.1 whose +10000
// cluster bus port is free too.
func FreePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port+10000 > 65535 {
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		if err != nil {
			continue
		}
		_ = bus.Close()
		return port
	}
	t.Fatal("no free port pair found")
	return 0
}

// StartServer starts a standalone redis-server and waits until it answers PING.
func StartServer(t testing.TB) *Server {
	t.Helper()
	return start(t, FreePort(t), nil)
}

// StartServerWith starts a standalone redis-server with extra arguments
// (e.g. "--enable-debug-command", "yes" for Stall).
func StartServerWith(t testing.TB, extra ...string) *Server {
	t.Helper()
	return start(t, FreePort(t), extra)
}

// Stall makes the server sleep for d (DEBUG SLEEP: it answers nobody
// meanwhile; the server must run with --enable-debug-command yes). It returns
// once the server is seen not answering, with a channel that yields the
// DEBUG SLEEP reply's error when the sleep is over.
func (s *Server) Stall(d time.Duration) (<-chan error, error) {
	done := make(chan error, 1)
	go func() {
		_, err := DoWithin(s.Addr(), d+10*time.Second, "DEBUG", "SLEEP", strconv.FormatFloat(d.Seconds(), 'f', 3, 64))
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := DoWithin(s.Addr(), 50*time.Millisecond, "PING"); err != nil {
			return done, nil // no answer within 50ms: asleep
		}
		select {
		case err := <-done:
			return done, fmt.Errorf("DEBUG SLEEP returned before the server was seen stalled: %v", err)
		default:
		}
	}
	return done, errors.New("the server never stalled")
}

func start(t testing.TB, port int, extra []string) *Server {
	t.Helper()
	bin := binary(t, "redis-server")
	dir := t.TempDir()
	args := append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "no", "--loglevel", "warning",
	}, extra...)
	s := &Server{t: t, Port: port, dir: dir, args: args}
	s.launch(bin)
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) launch(bin string) {
	s.t.Helper()
	s.cmd = exec.Command(bin, s.args...)
	logf, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("redis-%d.log", time.Now().UnixNano())))
	if err == nil {
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
	}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server on port %d: %v", s.Port, err)
	}
	done := make(chan struct{})
	s.done = done
	cmd := s.cmd
	go func() { _ = cmd.Wait(); close(done); _ = logf.Close() }()
	if err := waitPing(s.Addr(), 10*time.Second); err != nil {
		s.Stop()
		s.t.Fatalf("redis-server on port %d did not answer PING: %v", s.Port, err)
	}
}

// Stop kills the server (SIGKILL: no goodbye to clients) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.launch(binary(s.t, "redis-server"))
}

// Do sends one command over a fresh connection and returns the raw reply
// line(s) as text (RESP, minimal: enough for PING/INFO/CLUSTER INFO/DBSIZE).
func Do(addr string, args ...string) (string, error) {
	return DoWithin(addr, 2*time.Second, args...)
}

// DoWithin is Do with the whole exchange bounded by within.
func DoWithin(addr string, within time.Duration, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, min(within, time.Second))
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(within))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "-"):
		return "", errors.New(line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := ioReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	default:
		return line[1:], nil
	}
}

func ioReadFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func waitPing(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		out, err := Do(addr, "PING")
		if err == nil && out == "PONG" {
			return nil
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("timed out: %v", last)
}

// Cluster is a three-master Redis Cluster.
type Cluster struct {
	Nodes []*Server
}

// Addrs lists host:port of every master.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// URL is redis+cluster://host:port,host:port,host:port.
func (c *Cluster) URL() string { return "redis+cluster://" + strings.Join(c.Addrs(), ",") }

// StartCluster starts three cluster-enabled masters, joins them with
// redis-cli --cluster create and waits for cluster_state:ok on every node.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	cli := binary(t, "redis-cli")
	c := &Cluster{}
	for i := 0; i < 3; i++ {
		port := FreePort(t)
		c.Nodes = append(c.Nodes, start(t, port, []string{
			"--cluster-enabled", "yes", "--cluster-config-file", fmt.Sprintf("nodes-%d.conf", port),
			"--cluster-node-timeout", "2000",
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range c.Nodes {
		for {
			info, err := Do(n.Addr(), "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s never reached cluster_state:ok: %v %q", n.Addr(), err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// Pause freezes the server with SIGSTOP: connections stay open and nothing
// is answered until Continue (a stalled process, not a dead one).
func (s *Server) Pause() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("redis-server not running")
	}
	return s.cmd.Process.Signal(syscall.SIGSTOP)
}

// Continue resumes a server frozen by Pause (SIGCONT).
func (s *Server) Continue() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("redis-server not running")
	}
	return s.cmd.Process.Signal(syscall.SIGCONT)
}

// Establish marks the leased block store under prefix ("sy" by default) as
// up for longer than any lease: its epoch key is set to the Unix epoch, so
// blocks are granted at first use without learning mode. Tests that are not
// about learning mode use it on their fresh servers; a real store gets there
// by itself one lease after its first use.
func Establish(addr, prefix string) error {
	if prefix == "" {
		prefix = "sy"
	}
	_, err := Do(addr, "SET", prefix+":epoch", "0")
	return err
}
