package anthropichttp

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// TestWireErrorsTable holds the Anthropic edge's table to what clients see
// for each of the core's codes, written out here on its own: a row changed
// in wireErrors, or a code added to dispatch without a row here, fails.
// Each code is reached the way a client meets it when a backend's refusal
// decides it (dispatch.BackendError), and the backend's own words never
// reach the answer.
func TestWireErrorsTable(t *testing.T) {
	want := map[dispatch.Code]struct {
		status int
		typ    string
	}{
		dispatch.CodeInvalid:            {400, "invalid_request_error"},
		dispatch.CodeOutOfRange:         {400, "invalid_request_error"},
		dispatch.CodeFailedPrecondition: {400, "invalid_request_error"},
		dispatch.CodeNotFound:           {404, "not_found_error"},
		dispatch.CodeUnauthenticated:    {401, "authentication_error"},
		dispatch.CodePermissionDenied:   {403, "permission_error"},
		dispatch.CodeAlreadyExists:      {409, "invalid_request_error"},
		dispatch.CodeExhausted:          {429, "rate_limit_error"},
		dispatch.CodeUnavailable:        {529, "overloaded_error"},
		dispatch.CodeDeadlineExceeded:   {504, "timeout_error"},
		dispatch.CodeCanceled:           {499, "invalid_request_error"},
		dispatch.CodeUnimplemented:      {500, "api_error"},
		dispatch.CodeInternal:           {500, "api_error"},
	}
	const secret = "dial tcp 10.0.3.7:8000: model server says no"
	for c := dispatch.CodeInvalid; c <= dispatch.CodeInternal; c++ {
		w, ok := want[c]
		if !ok {
			t.Errorf("code %s: no expected answer in this test", c)
			continue
		}
		if _, ok := wireErrors[c]; !ok {
			t.Errorf("code %s: no row in wireErrors", c)
		}
		err := fmt.Errorf("pool p: %w", &dispatch.BackendError{Code: c, Status: "Status" + c.String(), Err: errors.New(secret)})
		e := fromError(err)
		if e.status != w.status || e.body.Type != w.typ {
			t.Errorf("code %s: %d %s, want %d %s", c, e.status, e.body.Type, w.status, w.typ)
		}
		if strings.Contains(e.body.Message, "10.0.3.7") || strings.Contains(e.body.Message, "says no") || !strings.Contains(e.body.Message, "backend answered Status"+c.String()) {
			t.Errorf("code %s: message %q must say what the backend answered, never its words", c, e.body.Message)
		}
		if (c == dispatch.CodeExhausted) != (e.retryAfter > 0) {
			t.Errorf("code %s: retry after %s", c, e.retryAfter)
		}
	}
	if e := fromError(errors.New("plain")); e.status != 500 || e.body.Type != "api_error" {
		t.Errorf("a plain error: %d %s", e.status, e.body.Type)
	}
	// The router's refusals name the field as the Messages API calls it.
	for _, c := range []struct {
		err  error
		want string
	}{
		{dispatch.Invalid("sampling.stop", "at most 4"), "stop_sequences: "},
		{dispatch.Invalid("tools[2].parameters_json", "not JSON"), "tools.2.input_schema: "},
		{dispatch.Invalid("request_id", "at most 128 characters"), "x-request-id: "},
		{&dispatch.InvalidError{Fields: []string{"prompt", "continuation.generated_text"}, Reason: "too long"}, "messages: "},
	} {
		if e := fromError(c.err); e.status != 400 || !strings.HasPrefix(e.body.Message, c.want) {
			t.Errorf("%v: %d %q, want 400 starting %q", c.err, e.status, e.body.Message, c.want)
		}
	}
	e := fromError(&dispatch.ExhaustedError{Err: errors.New("queue full"), RetryAfter: 2500 * time.Millisecond})
	if e.status != 429 || e.retryAfter != 2500*time.Millisecond || e.body.Message != "queue full" {
		t.Errorf("exhausted: %d %s %q", e.status, e.retryAfter, e.body.Message)
	}
}
