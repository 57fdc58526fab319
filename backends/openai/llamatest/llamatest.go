// Package llamatest starts real llama.cpp llama-server processes on
// loopback ports for tests, with the tiny GGUF model in
// backends/openai/testdata. It installs llama-server
// (scripts/install-llama-server.sh) when it is missing, so a test never
// skips for lack of it.
package llamatest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testwait"
)

// Alias is the model name the servers answer to unless Options.Alias says otherwise.
const Alias = "tiny-llama"

var (
	installOnce sync.Once
	installPath string
	installErr  error
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// ModelPath is the absolute path of the tiny test model.
func ModelPath() string {
	p, _ := filepath.Abs(filepath.Join(repoRoot(), "backends", "openai", "testdata", "llama-2-tiny-random.gguf"))
	return p
}

// Binary returns the llama-server to run: $SWITCHYARD_LLAMA_SERVER,
// llama-server on PATH, or the project's install in the user cache, which it
// makes when missing.
func Binary(t testing.TB) string {
	t.Helper()
	installOnce.Do(func() { installPath, installErr = find() })
	if installErr != nil {
		t.Fatalf("llama-server: %v", installErr)
	}
	return installPath
}

func find() (string, error) {
	if p := os.Getenv("SWITCHYARD_LLAMA_SERVER"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("llama-server"); err == nil {
		return p, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache")
	}
	dir := filepath.Join(cache, "switchyard", "llama.cpp")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Test binaries of several packages may install at once: one at a time.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(repoRoot(), "scripts", "install-llama-server.sh"), dir).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("scripts/install-llama-server.sh: %w: %s", err, out)
	}
	return filepath.Join(dir, "llama-server"), nil
}

// Options for one server.
type Options struct {
	// Slots is -np, the sequences run at once (default 2).
	Slots int
	// CtxSize is -c, shared by the slots (default 512 per slot).
	CtxSize int
	// Alias is the model name it serves (default Alias).
	Alias string
	// Host to listen on (default 127.0.0.1; any 127.0.0.0/8 address works,
	// so several servers can share a port as pods behind one DNS name do).
	Host string
	// Port to listen on (0: a free one). A restarted server reuses its port.
	Port int
	// Args are extra flags.
	Args []string
}

// Server is a running llama-server.
type Server struct {
	// URL is http://HOST:PORT (the API is under /v1).
	URL  string
	Port int
	opts Options
	cmd  *exec.Cmd
	done chan struct{}
	out  *syncBuffer
}

// Start runs a llama-server and waits until it answers /health (bounded).
// It is killed when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := Binary(t)
	if o.Slots <= 0 {
		o.Slots = 2
	}
	if o.CtxSize <= 0 {
		o.CtxSize = 512 * o.Slots
	}
	if o.Alias == "" {
		o.Alias = Alias
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	var lastErr error
	for try := 0; try < 3; try++ {
		port := o.Port
		if port == 0 {
			port = freePort(t)
		}
		s, err := start(bin, o, port)
		if err == nil {
			t.Cleanup(s.Kill)
			return s
		}
		lastErr = err
		if o.Port != 0 {
			break
		}
	}
	t.Fatalf("llama-server: %v", lastErr)
	return nil
}

func start(bin string, o Options, port int) (*Server, error) {
	args := append([]string{
		"-m", ModelPath(), "--host", o.Host, "--port", strconv.Itoa(port),
		"-c", strconv.Itoa(o.CtxSize), "-np", strconv.Itoa(o.Slots), "-t", "1", "-a", o.Alias, "--metrics",
		"--no-webui",
	}, o.Args...)
	cmd := exec.Command(bin, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + net.JoinHostPort(o.Host, strconv.Itoa(port)), Port: port, opts: o, cmd: cmd, done: make(chan struct{}), out: out}
	go func() { _ = cmd.Wait(); close(s.done) }()
	client := &http.Client{Timeout: time.Second}
	exited := false
	healthy := testwait.Until(30*time.Second, func() bool {
		select {
		case <-s.done:
			exited = true
			return true
		default:
		}
		resp, err := client.Get(s.URL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	switch {
	case exited:
		return nil, fmt.Errorf("exited at start: %s", out.tail())
	case !healthy:
		s.Kill()
		return nil, fmt.Errorf("not healthy within 30s: %s", out.tail())
	}
	return s, nil
}

// Restart starts the server again on the same port after Kill.
func (s *Server) Restart(t testing.TB) *Server {
	t.Helper()
	o := s.opts
	o.Port = s.Port
	return Start(t, o)
}

// Kill stops the server at once (SIGKILL, like a crashed pod) and waits for it.
func (s *Server) Kill() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Log is the tail of the server's output.
func (s *Server) Log() string { return s.out.tail() }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer keeps the last 16 KiB of a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	if s.b.Len() > 32<<10 {
		keep := s.b.Bytes()[s.b.Len()-16<<10:]
		s.b = *bytes.NewBuffer(append([]byte(nil), keep...))
	}
	return len(p), nil
}

func (s *syncBuffer) tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return string(b)
}
