package httpedge_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchyard-dev/switchyard/internal/httpedge"
	"github.com/switchyard-dev/switchyard/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs h behind a hardened server on a loopback Listener.
func serve(t *testing.T, h http.Handler, lo httpedge.ListenerOptions, so httpedge.ServerOptions) (*httpedge.Listener, string) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := httpedge.NewListener(raw, lo)
	srv := &http.Server{Handler: httpedge.Handler(h)}
	httpedge.Harden(srv, l, so)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return l, raw.Addr().String()
}

// refuse answers 401 without reading the body; with ?trust it trusts the
// connection first and answers 200.
var refuse = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("trust") {
		httpedge.Trust(r.Context())
		if !httpedge.Trusted(r.Context()) {
			http.Error(w, "not trusted", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	http.Error(w, "no key", http.StatusUnauthorized)
})

// closedWithin says whether the server closes conn (EOF or reset) within d.
func closedWithin(conn net.Conn, br *bufio.Reader, d time.Duration) error {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("the connection stayed open")
	}
	return nil
}

// TestRefusalNeverWaitsForTheBody: a request announcing a 200 KB body that
// never comes is answered at once with Connection: close, and the server
// closes the connection (net/http alone would wait to drain the body with
// no deadline).
func TestRefusalNeverWaitsForTheBody(t *testing.T) {
	_, addr := serve(t, refuse, httpedge.ListenerOptions{MaxConns: 8}, httpedge.ServerOptions{ReadTimeout: time.Hour})
	for _, te := range []string{"Content-Length: 200000", "Transfer-Encoding: chunked"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(conn, "POST /v1/x HTTP/1.1\r\nHost: x\r\n"+te+"\r\n\r\n")
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			conn.Close()
			t.Fatalf("%s: no answer: %v", te, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !resp.Close {
			t.Errorf("%s: status %d close %v, want 401 and Connection: close", te, resp.StatusCode, resp.Close)
		}
		if err := closedWithin(conn, br, 5*time.Second); err != nil {
			t.Errorf("%s: %v", te, err)
		}
		conn.Close()
	}
}

// TestBodyDeadlineLiftedOnceRead: the server's ReadTimeout bounds a slow
// body, but once a body is in, an answer may run past it (a stream) without
// its context being cancelled.
func TestBodyDeadlineLiftedOnceRead(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "slow body", http.StatusBadRequest)
			return
		}
		// Outlive the 300ms ReadTimeout: a request context cancelled by the
		// expired read deadline would end this wait early.
		select {
		case <-r.Context().Done():
			http.Error(w, "cancelled", http.StatusInternalServerError)
		case <-time.After(900 * time.Millisecond):
			_, _ = io.WriteString(w, "done\n")
		}
	})
	_, addr := serve(t, h, httpedge.ListenerOptions{MaxConns: 8}, httpedge.ServerOptions{ReadTimeout: 300 * time.Millisecond})

	for _, method := range []string{"POST", "GET"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("hello")
		}
		req, _ := http.NewRequestWithContext(ctxT(t), method, "http://"+addr+"/", body)
		tr := &http.Transport{}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.StatusCode != 200 || string(b) != "done\n" {
			t.Errorf("%s: %d %q, want 200 done", method, resp.StatusCode, b)
		}
	}

	// A body that never ends is cut at the ReadTimeout.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("stalled body: %d, want 400", resp.StatusCode)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestUntrustedConnectionsNeverStarveTrustedOnes: silent connections fill
// the untrusted places; each new connection takes the oldest one's place, so
// a client that authenticates still gets in, and trusted connections are
// never closed to make room.
func TestUntrustedConnectionsNeverStarveTrustedOnes(t *testing.T) {
	l, addr := serve(t, refuse, httpedge.ListenerOptions{MaxConns: 6, MaxUntrusted: 3}, httpedge.ServerOptions{ReadHeaderTimeout: time.Hour, ReadTimeout: time.Hour, IdleTimeout: time.Hour})

	trusted := trustedConn(t, addr)
	testwait.For(t, 5*time.Second, "one trusted connection", func() bool {
		open, untrusted, _, _ := l.Stats()
		return open == 1 && untrusted == 0
	})

	// 20 silent connections: at most 3 are held at once.
	var silent []net.Conn
	for range 20 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	testwait.For(t, 5*time.Second, "17 silent connections closed to make room", func() bool {
		_, untrusted, evicted, _ := l.Stats()
		return untrusted == 3 && evicted == 17
	})
	// The oldest were closed; the newest three still wait for headers.
	for i, c := range silent[:17] {
		if err := closedWithin(c, bufio.NewReader(c), 5*time.Second); err != nil {
			t.Fatalf("silent connection %d: %v", i, err)
		}
	}

	// A client that authenticates gets in despite the full untrusted places,
	// twice (so trusted connections fill the places the silent ones cannot).
	second := trustedConn(t, addr)
	third := trustedConn(t, addr)
	for _, c := range []*persistentConn{trusted, second, third} {
		c.get(t, "/?trust") // still served on the same connection
	}
	// The second connection took a silent one's place; the third a free one.
	open, untrusted, evicted, _ := l.Stats()
	if open != 5 || untrusted != 2 || evicted != 18 {
		t.Fatalf("open %d untrusted %d evicted %d, want 5, 2 and 18", open, untrusted, evicted)
	}

	// Two more silent connections: the first takes the last free place, the
	// second an untrusted place, never a trusted one.
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	testwait.For(t, 5*time.Second, "the newest connection in an untrusted place", func() bool {
		open, untrusted, evicted, _ := l.Stats()
		return open == 6 && untrusted == 3 && evicted == 19
	})
	for _, c := range []*persistentConn{trusted, second, third} {
		c.get(t, "/?trust")
	}
}

// TestEveryPlaceTrustedRefusesNewConnections: with every place held by a
// trusted connection, new connections are closed at once.
func TestEveryPlaceTrustedRefusesNewConnections(t *testing.T) {
	l, addr := serve(t, refuse, httpedge.ListenerOptions{MaxConns: 2, MaxUntrusted: 1}, httpedge.ServerOptions{IdleTimeout: time.Hour})
	a, b := trustedConn(t, addr), trustedConn(t, addr)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := closedWithin(c, bufio.NewReader(c), 5*time.Second); err != nil {
		t.Fatalf("a third connection: %v", err)
	}
	if _, _, _, refused := l.Stats(); refused != 1 {
		t.Fatalf("refused %d, want 1", refused)
	}
	a.get(t, "/?trust")
	b.get(t, "/?trust")
	// A trusted connection's close frees its place.
	a.conn.Close()
	testwait.For(t, 5*time.Second, "a place freed", func() bool {
		open, _, _, _ := l.Stats()
		return open == 1
	})
	d := trustedConn(t, addr)
	d.get(t, "/?trust")
}

// persistentConn is one HTTP/1.1 keep-alive connection.
type persistentConn struct {
	conn net.Conn
	br   *bufio.Reader
}

func trustedConn(t *testing.T, addr string) *persistentConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	pc := &persistentConn{conn: c, br: bufio.NewReader(c)}
	pc.get(t, "/?trust")
	return pc
}

func (pc *persistentConn) get(t *testing.T, path string) {
	t.Helper()
	_ = pc.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(pc.conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(pc.br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("GET %s: %d close %v %s", path, resp.StatusCode, resp.Close, b)
	}
}
