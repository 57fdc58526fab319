package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestEveryListenerAnswersRefusalsAtOnce: on the front door, the console
// and the metrics listener alike, a request announcing a 200 KB body that
// never comes and answered without reading it (401/404/405/421...) gets its
// answer with Connection: close, and the connection is closed, at once: no
// listener waits for a body it will not read.
func TestEveryListenerAnswersRefusalsAtOnce(t *testing.T) {
	var out bytes.Buffer
	tee := &lockedWriter{w: &out}
	_, metricsURL, stop := startMetricsRouter(t, tee, "--console-listen", "127.0.0.1:0")
	defer func() { _ = stop() }()
	text := tee.String()
	find := func(re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no %s in:\n%s", re, text)
		}
		u, err := url.Parse(m[1])
		if err != nil {
			t.Fatal(err)
		}
		return u.Host
	}
	mu, _ := url.Parse(metricsURL)
	for name, addr := range map[string]string{
		"front door": find(`OpenAI-compatible\) on (\S+)`),
		"console":    find(`console on (\S+)`),
		"metrics":    mu.Host,
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(conn, "POST /no/such/path HTTP/1.1\r\nHost: "+addr+"\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n")
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			conn.Close()
			t.Fatalf("%s: no answer while the body is pending: %v", name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || !resp.Close {
			t.Errorf("%s: %d (close %v), want a refusal with Connection: close", name, resp.StatusCode, resp.Close)
		}
		_, err = br.ReadByte()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: the connection stayed open after the refusal", name)
		}
		conn.Close()
	}
}

// lockedWriter is an io.Writer safe for the router's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Clone(l.w.String())
}
