package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startWithHTTP runs the router and returns the front door's base URL ("" when
// --http-listen is off) and a stop function.
func startWithHTTP(t *testing.T, args ...string) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Run(ctx, append([]string{"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level", "warn", "--metrics-listen", "off", "--console-listen", "off", "--sim-time-scale", "50"}, args...), pw, io.Discard)
		pw.Close()
		done <- err
	}()
	httpRe := regexp.MustCompile(`OpenAI-compatible\) on (\S+)/v1`)
	sc := bufio.NewScanner(pr)
	base, started := "", false
	for sc.Scan() {
		if m := httpRe.FindStringSubmatch(sc.Text()); m != nil {
			base = m[1]
		}
		if strings.Contains(sc.Text(), "listening on") {
			started = true
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if !started {
		cancel()
		t.Fatalf("router did not start: %v", <-done)
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("Run did not return")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return base, stop
}

func TestHTTPListenServesTheOpenAIAPI(t *testing.T) {
	base, stop := startWithHTTP(t)
	if base == "" {
		t.Fatal("no http address printed")
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := client.Post(base+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"llama-3.1-8b","max_tokens":4,"messages":[{"role":"user","content":"hello"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var cc struct {
		Object string `json:"object"`
		Usage  struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	err = json.NewDecoder(resp.Body).Decode(&cc)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || cc.Object != "chat.completion" || cc.Usage.CompletionTokens != 4 || resp.Header.Get("X-Switchyard-Pool") == "" {
		t.Fatalf("status %d %+v %v headers %v", resp.StatusCode, cc, err, resp.Header)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// After shutdown the port is closed.
	if _, err := client.Get(base + "/v1/models"); err == nil {
		t.Fatal("front door still answers after shutdown")
	}
}

func TestHTTPListenOff(t *testing.T) {
	base, _ := startWithHTTP(t, "--http-listen", "off")
	if base != "" {
		t.Fatalf("--http-listen off still served %s", base)
	}
}

func TestHTTPListenUsesTheTLSFlags(t *testing.T) {
	certFile, keyFile, roots := selfSigned(t) // console_test.go
	base, _ := startWithHTTP(t, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("base %q, want https", base)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(base + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("status %d proto %s", resp.StatusCode, resp.Proto)
	}
	// Plain HTTP to the TLS port is refused.
	plain := &http.Transport{}
	defer plain.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: plain, Timeout: 5 * time.Second}).Get("http://" + strings.TrimPrefix(base, "https://") + "/v1/models"); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close() // else its connection outlives the test (goleak)
		if resp.StatusCode == 200 {
			t.Fatal("plaintext call served on the TLS port")
		}
	}
}

// TestShutdownLetsInFlightHTTPStreamsFinish: SIGTERM while a stream runs on
// the front door; the stream still ends with [DONE].
func TestShutdownLetsInFlightHTTPStreamsFinish(t *testing.T) {
	base, stop := startWithHTTP(t, "--sim-time-scale", "1", "--shutdown-timeout", "20s")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	resp, err := client.Post(base+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"llama-3.3-70b","max_tokens":300,"stream":true,"messages":[{"role":"user","content":"a long answer please"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatalf("no first event: %v", sc.Err())
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	last, after := "", 0
	for sc.Scan() {
		if sc.Text() != "" {
			last = sc.Text()
			after++
		}
	}
	if last != "data: [DONE]" {
		t.Fatalf("stream cut by shutdown: last line %q (%v)", last, sc.Err())
	}
	if after < 10 {
		t.Fatalf("only %d events after shutdown began: the stream was not in flight", after)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

func TestHTTPAllowedOriginsFlag(t *testing.T) {
	// A malformed origin stops the start with an error naming the flag and the entry.
	for _, bad := range []string{"app.example.com", "https://app.example.com/path", "https://*.example.com"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := Run(ctx, []string{"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level", "warn", "--metrics-listen", "off", "--console-listen", "off",
			"--http-allowed-origins", "https://ok.example," + bad}, io.Discard, io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "--http-allowed-origins") || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Fatalf("--http-allowed-origins %s: %v", bad, err)
		}
	}

	base, _ := startWithHTTP(t, "--http-allowed-origins", "https://app.example.com, http://localhost:3000")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for origin, want := range map[string]int{"https://app.example.com": 200, "http://localhost:3000": 200, "https://evil.example": 403, "": 200} {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions",
			strings.NewReader(`{"model":"llama-3.1-8b","max_tokens":2,"messages":[{"role":"user","content":"hello"}]}`))
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		wantACAO := origin
		if want != 200 {
			wantACAO = ""
		}
		if resp.StatusCode != want || resp.Header.Get("Access-Control-Allow-Origin") != wantACAO {
			t.Fatalf("Origin %q: status %d, Access-Control-Allow-Origin %q; want %d %q", origin, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), want, wantACAO)
		}
	}
	// Without tenants, the allowed origin's host is a Host the front door answers to; other names are not.
	for host, want := range map[string]int{"app.example.com": 200, "rebind.evil.example": 421} {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/models", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("Host %s: status %d, want %d", host, resp.StatusCode, want)
		}
	}
}

// The front door checks the Host of keyless calls only on a loopback-only
// listener; bound beyond loopback it is reached under names nobody lists.
func TestLoopbackOnly(t *testing.T) {
	for listen, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.0.0.9:8080": true, "[::1]:8080": true, "localhost:8080": true, "LOCALHOST:1": true, "[::ffff:127.0.0.1]:8080": true,
		"0.0.0.0:8080": false, "[::]:8080": false, ":8080": false, "10.0.0.7:8080": false, "router.internal:8080": false, "nonsense": false,
	} {
		if got := loopbackOnly(listen); got != want {
			t.Errorf("loopbackOnly(%q) = %v, want %v", listen, got, want)
		}
	}
}
