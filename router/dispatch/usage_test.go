package dispatch

import (
	"errors"
	"fmt"
	"testing"
)

// clientInput and fillInput on their own, including the edges no fake
// backend reaches.
func TestClientInput(t *testing.T) {
	req := &Request{InputTokens: 10}
	for _, tc := range []struct {
		name     string
		streamed int32
		u        Usage
		reported int32 // the usage's input after fillInput
		client   int
	}{
		{name: "reported", u: Usage{InputTokens: 30}, reported: 30, client: 30},
		{name: "none reported", u: Usage{}, reported: 10, client: 10},
		{name: "output only", u: Usage{OutputTokens: 3}, reported: 10, client: 10},
		{name: "continuation: the re-sent prefix is not the client's", streamed: 5, u: Usage{InputTokens: 35}, reported: 35, client: 30},
		{name: "continuation, none reported: the estimate", streamed: 5, u: Usage{}, reported: 15, client: 10},
		{name: "a count under the prefix is not believed", streamed: 5, u: Usage{InputTokens: 5}, reported: 5, client: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &Attempt{Streamed: tc.streamed}
			u := tc.u
			fillInput(req, a, &u)
			if u.InputTokens != tc.reported {
				t.Errorf("reported input %d, want %d", u.InputTokens, tc.reported)
			}
			if got := clientInput(req, a, &u); got != tc.client {
				t.Errorf("client input %d, want %d", got, tc.client)
			}
		})
	}
}

// TestPublicTextOfABackendRefusal: a backend's words reach the client only
// for a refusal of the request or a shortage that decides the call; a
// failure's text, or one wrapped in the router's own verdict, never does.
func TestPublicTextOfABackendRefusal(t *testing.T) {
	refusal := &BackendError{Code: CodeInvalid, Status: "InvalidArgument", Message: "messages[0].content: empty", Err: errors.New("rpc error: code = InvalidArgument desc = messages[0].content: empty")}
	failure := &BackendError{Code: CodeUnavailable, Status: "Unavailable", Err: errors.New("dial tcp 10.0.3.7:8000: connection refused")}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"a refusal decides the call", refusal, "messages[0].content: empty"},
		{"a failure's text is hidden", failure, "backend answered Unavailable (details are in the router's log)"},
		{"inside the router's verdict", &UnavailableError{Err: fmt.Errorf("%w: every eligible pool failed: pool a: %w", ErrPoolFailed, failure)},
			"pool failed: every eligible pool failed: pool a: backend answered Unavailable"},
	} {
		if got := PublicText(tc.err); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
