package loadtest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends/openai"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// The front door's HTTP answers map back to the gRPC codes the router gave,
// so reports of both protocols count statuses alike.
func TestHTTPStatusMapsBackToGRPCCodes(t *testing.T) {
	cases := []struct {
		status int
		body   string
		code   codes.Code
		msg    string
	}{
		{400, `{"error":{"message":"invalid argument: n: only 1","type":"invalid_request_error","param":"n","code":"invalid_value"}}`, codes.InvalidArgument, "invalid argument: n: only 1"},
		{401, `{"error":{"message":"unknown API key"}}`, codes.Unauthenticated, "unknown API key"},
		{404, `{"error":{"message":"unknown model"}}`, codes.NotFound, "unknown model"},
		{409, `{}`, codes.AlreadyExists, "Conflict"},
		{413, `not json`, codes.InvalidArgument, "Request Entity Too Large"},
		{429, `{"error":{"message":"no capacity"}}`, codes.ResourceExhausted, "no capacity"},
		{500, `{"error":{"message":"boom"}}`, codes.Internal, "boom"},
		{502, ``, codes.Unavailable, "Bad Gateway"},
		{503, `{"error":{"message":"no eligible pool"}}`, codes.Unavailable, "no eligible pool"},
		{504, `{"error":{"message":"late"}}`, codes.DeadlineExceeded, "late"},
	}
	for _, c := range cases {
		err := httpStatusError(&http.Response{StatusCode: c.status, Body: io.NopCloser(strings.NewReader(c.body))})
		st, _ := status.FromError(err)
		if st.Code() != c.code || st.Message() != c.msg {
			t.Errorf("%d %s: got %v %q", c.status, c.body, st.Code(), st.Message())
		}
	}
	for code, want := range map[string]codes.Code{"service_unavailable": codes.Unavailable, "deadline_exceeded": codes.DeadlineExceeded, "rate_limit_exceeded": codes.ResourceExhausted, "internal_error": codes.Internal} {
		if got := status.Code(streamError(&openAIError{Code: code, Message: "x"})); got != want {
			t.Errorf("stream error %s: %v, want %v", code, got, want)
		}
	}
}

func TestNewOpenAIClientNeedsAnHTTPURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x"} {
		if _, err := NewOpenAIClient(OpenAIOptions{BaseURL: u}); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
	c, err := NewOpenAIClient(OpenAIOptions{BaseURL: "http://127.0.0.1:8080/v1/"})
	if err != nil || c.base != "http://127.0.0.1:8080" {
		t.Fatalf("%v %+v", err, c)
	}
	c.Close()
}

// The client sends the body the openai adapter builds (one builder in the
// module, backends/openai.NewWireRequest) to the path it names under /v1,
// and reads the answer with the adapter's wire types.
func TestOpenAIClientSendsTheAdaptersBody(t *testing.T) {
	var mu sync.Mutex
	var paths, bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		paths, bodies = append(paths, r.URL.Path), append(bodies, string(b))
		mu.Unlock()
		_, _ = io.WriteString(w, `{"choices":[{"message":{"content":"hi there"},"finish_reason":"length"}],"usage":{"prompt_tokens":11,"completion_tokens":2},`+
			`"switchyard":{"pool":"p1","attempts":1,"request_id":"r1"}}`)
	}))
	defer srv.Close()
	c, err := NewOpenAIClient(OpenAIOptions{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := &pb.GenerateRequest{Model: "m", MaxTokens: 2, Messages: []*pb.ChatMessage{{Role: "user", Content: "hello <there>"}},
		Sampling: &pb.SamplingParameters{Stop: []string{"."}}}
	resp, err := c.Generate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	w, path := openai.NewWireRequest(req, false)
	want, err := w.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 1 || paths[0] != "/v1"+path || bodies[0] != string(want) {
		t.Fatalf("sent %v %q, want %s %s", paths, bodies, "/v1"+path, want)
	}
	if resp.Text != "hi there" || resp.FinishReason != pb.FinishReason_FINISH_REASON_LENGTH || resp.Usage.GetInputTokens() != 11 ||
		resp.Usage.GetOutputTokens() != 2 || resp.Route.GetPool() != "p1" || resp.RequestId != "r1" {
		t.Fatalf("answer %+v", resp)
	}
}
