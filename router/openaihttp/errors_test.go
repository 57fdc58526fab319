package openaihttp

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// TestWireErrorsTable holds the OpenAI edge's table to what clients see for
// each of the core's codes, written out here on its own: a row changed in
// wireErrors, or a code added to dispatch without a row here, fails. Each
// code is reached the way a client meets it when a backend's refusal
// decides it (dispatch.BackendError), and the backend's own words never
// reach the answer.
func TestWireErrorsTable(t *testing.T) {
	want := map[dispatch.Code]struct {
		status    int
		typ, code string
		param     string
	}{
		dispatch.CodeInvalid:            {400, "invalid_request_error", "invalid_value", ""},
		dispatch.CodeOutOfRange:         {400, "invalid_request_error", "invalid_value", ""},
		dispatch.CodeFailedPrecondition: {400, "invalid_request_error", "invalid_value", ""},
		dispatch.CodeNotFound:           {404, "invalid_request_error", "model_not_found", "model"},
		dispatch.CodeUnauthenticated:    {401, "invalid_request_error", "invalid_api_key", ""},
		dispatch.CodePermissionDenied:   {403, "invalid_request_error", "permission_denied", ""},
		dispatch.CodeAlreadyExists:      {409, "invalid_request_error", "conflict", "x-request-id"},
		dispatch.CodeExhausted:          {429, "rate_limit_error", "rate_limit_exceeded", ""},
		dispatch.CodeUnavailable:        {503, "server_error", "service_unavailable", ""},
		dispatch.CodeDeadlineExceeded:   {504, "timeout_error", "deadline_exceeded", ""},
		dispatch.CodeCanceled:           {499, "invalid_request_error", "canceled", ""},
		dispatch.CodeUnimplemented:      {501, "invalid_request_error", "not_implemented", ""},
		dispatch.CodeInternal:           {500, "server_error", "internal_error", ""},
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
		e := fromError(err, nil)
		param, code := "", ""
		if e.body.Param != nil {
			param = *e.body.Param
		}
		if e.body.Code != nil {
			code = *e.body.Code
		}
		if e.status != w.status || e.body.Type != w.typ || code != w.code || param != w.param {
			t.Errorf("code %s: %d %s %s param %q, want %d %s %s param %q", c, e.status, e.body.Type, code, param, w.status, w.typ, w.code, w.param)
		}
		if strings.Contains(e.body.Message, "10.0.3.7") || strings.Contains(e.body.Message, "says no") || !strings.Contains(e.body.Message, "backend answered Status"+c.String()) {
			t.Errorf("code %s: message %q must say what the backend answered, never its words", c, e.body.Message)
		}
		if (c == dispatch.CodeExhausted) != (e.retryAfter > 0) {
			t.Errorf("code %s: retry after %s", c, e.retryAfter)
		}
	}
	// Not an error's code: a 500, never a 200.
	if e := fromError(errors.New("plain"), nil); e.status != 500 {
		t.Errorf("a plain error: %d", e.status)
	}
	// The router's own shortage: its wait, whole seconds rounded up.
	e := fromError(&dispatch.ExhaustedError{Err: errors.New("queue full"), RetryAfter: 1500 * time.Millisecond}, nil)
	if e.status != 429 || retryAfterSeconds(e.retryAfter) != "2" || e.body.Message != "queue full" {
		t.Errorf("exhausted: %d %s %q", e.status, retryAfterSeconds(e.retryAfter), e.body.Message)
	}
}
