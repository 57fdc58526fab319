package openaihttp_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testwait"
	"github.com/switchyard-dev/switchyard/router"
)

// raiseFileLimit lifts this process's open-file limit to its hard limit:
// the lockout test holds 2,000+ sockets (both ends of every connection).
func raiseFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < need {
		t.Fatalf("open-file limit %d, need %d (raise the hard limit: ulimit -Hn)", lim.Cur, need)
	}
}

// TestKeylessFloodNeverLocksOutKeyedClients is the outside probe's lockout
// (2026-12-02): 1,000 connections without a key each announce a 200 KB body
// and send none. A client with a valid key is served in under 3 s, and every
// key-less connection is answered 401 or closed within 15 s (before the fix
// the 401 waited for the body, for ever, and 4,096 such connections held
// every place).
func TestKeylessFloodNeverLocksOutKeyedClients(t *testing.T) {
	const flood = 1000
	raiseFileLimit(t, 3*flood)
	const key = "sk-tenant-acme"
	fd := startFrontDoor(t, doorOpts{extraYAML: "\ntenants:\n  - name: acme\n    api_key_sha256: [" + router.HashToken(key) + "]\n"})
	addr := strings.TrimPrefix(fd.url, "http://")

	start := time.Now()
	conns := make([]net.Conn, flood)
	var wg sync.WaitGroup
	errs := make(chan error, flood)
	for w := range 8 { // dial from 8 goroutines at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < flood; i += 8 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
				if _, err := io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: "+addr+"\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for err := range errs {
		t.Fatalf("flood dial: %v", err)
	}
	t.Logf("%d key-less connections opened in %s", flood, time.Since(start).Round(time.Millisecond))

	// A client with the key, on a new connection, while the flood is open.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	keyed := time.Now()
	req, _ := http.NewRequestWithContext(ctxT(t, 10*time.Second), "POST", fd.url+"/v1/chat/completions", strings.NewReader(chatBody("4")))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("keyed client during the flood: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(keyed)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"completion_tokens":4`) {
		t.Fatalf("keyed client: %d %s", resp.StatusCode, b)
	}
	if took >= 3*time.Second {
		t.Fatalf("keyed client served after %s, want < 3s", took)
	}
	t.Logf("keyed client served in %s during the flood", took.Round(time.Millisecond))

	// Every key-less connection: 401 then closed, or closed, within 15 s of
	// the flood's start.
	deadline := start.Add(15 * time.Second)
	var answered, closed int
	for i, c := range conns {
		_ = c.SetReadDeadline(deadline)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 || !resp.Close {
				t.Fatalf("key-less connection %d: %d (close %v), want 401 with Connection: close", i, resp.StatusCode, resp.Close)
			}
			answered++
			_, err = br.ReadByte() // then the server closes it
		} else {
			closed++
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("key-less connection %d still open %s after the flood began", i, time.Since(start).Round(time.Millisecond))
		}
	}
	t.Logf("key-less connections: %d answered 401 and closed, %d closed, all within %s", answered, closed, time.Since(start).Round(time.Millisecond))
	if answered == 0 {
		t.Fatal("no key-less connection got its 401")
	}
	tr.CloseIdleConnections()
	testwait.For(t, 10*time.Second, "the flood's connections released", func() bool {
		open, _, _, _ := fd.lis.Stats()
		return open == 0
	})
}

// TestKeylessRouterServesDespiteSlowBodies: without tenants (the demo
// router) every caller is let in, so a client announcing a body and sending
// none holds its connection until the 30 s read deadline. Such connections
// are never authenticated (no whole request came in): past the cap a new
// connection takes the oldest one's place, so a real client is still served
// at once with every place held by slow bodies.
func TestKeylessRouterServesDespiteSlowBodies(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{maxConns: 64, maxUnauth: 16})
	addr := strings.TrimPrefix(fd.url, "http://")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 100 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		_, _ = io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: "+addr+"\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{")
	}
	testwait.For(t, 5*time.Second, "the slow bodies hold every unauthenticated place", func() bool {
		_, untrusted, evicted, _ := fd.lis.Stats()
		return untrusted == 16 && evicted == 84
	})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctxT(t, 10*time.Second), "POST", fd.url+"/v1/chat/completions", strings.NewReader(chatBody("3")))
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("client among slow bodies: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || time.Since(start) >= 3*time.Second {
		t.Fatalf("client among slow bodies: %d after %s: %s", resp.StatusCode, time.Since(start), b)
	}
	// Its connection is authenticated now, and stays when more slow bodies come.
	for range 20 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	testwait.For(t, 5*time.Second, "20 more connections took slow bodies' places", func() bool {
		_, _, evicted, _ := fd.lis.Stats()
		return evicted == 104
	})
	req, _ = http.NewRequestWithContext(ctxT(t, 10*time.Second), "POST", fd.url+"/v1/chat/completions", strings.NewReader(chatBody("3")))
	req.Header.Set("Content-Type", "application/json")
	var reused bool
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
	resp, err = (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !reused {
		t.Fatalf("second call: %d, on the same connection %v", resp.StatusCode, reused)
	}
}
