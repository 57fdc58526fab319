package openaihttp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/openaihttp"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

func chatBody(maxTokens string) string {
	return `{"model":"llama-3.1-8b","max_tokens":` + maxTokens + `,"messages":[{"role":"user","content":"hi"}]}`
}

func TestH2CAndHTTP11KeepAlive(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})

	// HTTP/1.1: the second call reuses the first call's connection.
	var reused []bool
	for range 2 {
		ctx := httptrace.WithClientTrace(ctxT(t, 10*time.Second), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fd.url+"/v1/chat/completions", strings.NewReader(chatBody("3")))
		resp, err := fd.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
			t.Fatalf("status %d proto %s", resp.StatusCode, resp.Proto)
		}
	}
	if len(reused) != 2 || reused[0] || !reused[1] {
		t.Fatalf("connection reuse %v, want [false true]", reused)
	}

	// HTTP/2 without TLS (prior knowledge), streaming.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctxT(t, 10*time.Second), http.MethodPost, fd.url+"/v1/chat/completions",
		strings.NewReader(`{"model":"llama-3.1-8b","max_tokens":4,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
		t.Fatalf("proto %s body %s", resp.Proto, b)
	}
	if resp.Trailer.Get("X-Switchyard-Pool") == "" || resp.Trailer.Get("X-Switchyard-Attempts") != "1" {
		t.Fatalf("h2 trailers %v", resp.Trailer)
	}
	if pool := resp.Header.Get("X-Switchyard-Pool"); pool != resp.Trailer.Get("X-Switchyard-Pool") || resp.Header.Get("X-Switchyard-Region") == "" {
		t.Fatalf("h2 route headers %v, trailers %v: want the same pool", resp.Header, resp.Trailer)
	}
}

// TestSlowClientsAreCutOff: a client that never finishes its headers, or
// its body, is disconnected or refused within the configured time.
func TestSlowClientsAreCutOff(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{
		server:  openaihttp.ServerOptions{ReadHeaderTimeout: 200 * time.Millisecond},
		handler: openaihttp.Options{BodyReadTimeout: 200 * time.Millisecond},
	})
	addr := strings.TrimPrefix(fd.url, "http://")

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n") // headers never end
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server kept a header-less connection open for %s", time.Since(start))
	}

	conn2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	_, _ = io.WriteString(conn2, "POST /v1/chat/completions HTTP/1.1\r\nHost: "+addr+"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":") // body never ends
	_ = conn2.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn2), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(b), "body_read_failed") {
		t.Fatalf("stalled body: %d %s", resp.StatusCode, b)
	}
}

// TestMetricsAndTracesCarryTheHTTPRPC: HTTP calls are counted under the same
// metric names as gRPC calls, with rpc http_chat / http_completions, and the
// server span is the parent of the router's attempt span.
func TestMetricsAndTracesCarryTheHTTPRPC(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	fd := startFrontDoor(t, doorOpts{meter: mp, tracer: tp, handler: openaihttp.Options{TracerProvider: tp, Propagator: telemetry.Propagator()}})

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
		body := chatBody("2")
		if path == "/v1/completions" {
			body = `{"model":"llama-3.1-8b","max_tokens":2,"prompt":"hi"}`
		}
		req, _ := http.NewRequestWithContext(ctxT(t, 10*time.Second), http.MethodPost, fd.url+path, strings.NewReader(body))
		req.Header.Set("Traceparent", parent)
		resp, err := fd.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	rpcs := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "switchyard.requests" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				v, _ := dp.Attributes.Value(attribute.Key(telemetry.KeyRPC))
				rpcs[v.AsString()] += dp.Value
			}
		}
	}
	if rpcs[openaihttp.RPCChat] != 1 || rpcs[openaihttp.RPCCompletions] != 1 {
		t.Fatalf("switchyard.requests by rpc: %v", rpcs)
	}

	var server, attempt sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		switch s.Name() {
		case "POST /v1/chat/completions":
			server = s
		case "switchyard.attempt":
			if attempt == nil {
				attempt = s
			}
		}
	}
	if server == nil || attempt == nil {
		t.Fatalf("spans: server %v attempt %v", server, attempt)
	}
	if server.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || server.Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("server span not a child of the caller's traceparent: %v", server.Parent())
	}
	if attempt.Parent().SpanID() != server.SpanContext().SpanID() {
		t.Fatal("attempt span is not a child of the HTTP server span")
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, kv := range server.Attributes() {
		attrs[kv.Key] = kv.Value
	}
	if attrs["switchyard.pool"].AsString() == "" || attrs["http.response.status_code"].AsInt64() != 200 || attrs[telemetry.KeyModel].AsString() != "llama-3.1-8b" {
		t.Fatalf("server span attributes %v", attrs)
	}
}

// TestEveryAnswerCountedAndNamed: every front-door answer — served, refused
// before the body (401), refused while parsing (400: bad JSON names "body"),
// an unknown path (404), a method not allowed (405) — carries X-Request-Id
// and is counted in http.server.request.duration by status, with the
// OpenTelemetry HTTP semantic conventions' attributes.
func TestEveryAnswerCountedAndNamed(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	const key = "sk-tenant-acme"
	fd := startFrontDoor(t, doorOpts{meter: mp, handler: openaihttp.Options{MeterProvider: mp},
		extraYAML: "\ntenants:\n  - name: acme\n    api_key_sha256: [" + router.HashToken(key) + "]\n"})
	for _, c := range []struct {
		method, path, key, body string
		status                  int
		want                    string
	}{
		{"POST", "/v1/chat/completions", key, chatBody("2"), 200, ""},
		{"POST", "/v1/chat/completions", "", chatBody("2"), 401, "invalid_api_key"},
		{"POST", "/v1/chat/completions", key, `{"model":`, 400, `"param":"body"`},
		{"POST", "/v1/chat/completions", key, ``, 400, `"param":"body"`},
		{"GET", "/v2/nothing", key, ``, 404, "unknown_url"},
		{"GET", "/v1/chat/completions", key, ``, 405, "method_not_allowed"},
	} {
		req, _ := http.NewRequestWithContext(ctxT(t, 10*time.Second), c.method, fd.url+c.path, strings.NewReader(c.body))
		if c.key != "" {
			req.Header.Set("Authorization", "Bearer "+c.key)
		}
		resp, err := fd.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.Contains(string(b), c.want) {
			t.Errorf("%s %s: %d %s, want %d with %s", c.method, c.path, resp.StatusCode, b, c.status, c.want)
		}
		if id := resp.Header.Get("X-Request-Id"); len(id) != 32 {
			t.Errorf("%s %s (%d): X-Request-Id %q", c.method, c.path, resp.StatusCode, id)
		}
	}
	// The client's own id comes back on an error too.
	req, _ := http.NewRequestWithContext(ctxT(t, 10*time.Second), "POST", fd.url+"/v1/chat/completions", strings.NewReader(`[`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Request-Id", "client-id-7")
	resp, err := fd.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("X-Request-Id") != "client-id-7" {
		t.Errorf("bad JSON with the client's id: %d %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "http.server.request.duration" {
				continue
			}
			if m.Unit != "s" {
				t.Errorf("unit %q", m.Unit)
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				st, _ := dp.Attributes.Value("http.response.status_code")
				route, _ := dp.Attributes.Value("http.route")
				method, _ := dp.Attributes.Value("http.request.method")
				got[fmt.Sprintf("%s %s %d", method.AsString(), route.AsString(), st.AsInt64())] += dp.Count
			}
		}
	}
	want := map[string]uint64{
		"POST /v1/chat/completions 200": 1, "POST /v1/chat/completions 401": 1, "POST /v1/chat/completions 400": 3,
		"GET / 404": 1, "GET / 405": 1,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("http.server.request.duration %q: %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
}
