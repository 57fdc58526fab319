package anthropichttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/router/edgehttp"
)

// Anthropic's error types.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typePermission     = "permission_error"
	typeNotFound       = "not_found_error"
	typeTooLarge       = "request_too_large"
	typeRateLimit      = "rate_limit_error"
	typeAPI            = "api_error"
	typeOverloaded     = "overloaded_error"
	typeTimeout        = "timeout_error"
)

// apiError is Anthropic's error: {"type": "error", "error": {"type", "message"}, "request_id"}.
type apiError struct {
	Type      string    `json:"type"`
	Error     errorBody `json:"error"`
	RequestID string    `json:"request_id,omitempty"`
}

type errorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// httpError is an error ready for the client.
type httpError struct {
	status     int
	body       errorBody
	retryAfter time.Duration
}

func newError(code int, typ, msg string) *httpError {
	return &httpError{status: code, body: errorBody{Type: typ, Message: msg}}
}

// fromField is a 400 for a request refused before the router.
func fromField(err error) *httpError {
	var fe *edgehttp.FieldError
	if errors.As(err, &fe) {
		return newError(http.StatusBadRequest, typeInvalidRequest, fe.Field+": "+fe.Msg)
	}
	return newError(http.StatusBadRequest, typeInvalidRequest, err.Error())
}

// routerFields maps the router's GenerateRequest field paths to the
// Messages API's, for the front of a 400's message.
var routerFields = map[string]string{
	"sampling.stop":               "stop_sequences",
	"sampling.temperature":        "temperature",
	"sampling.top_p":              "top_p",
	"sampling.top_k":              "top_k",
	"max_tokens":                  "max_tokens",
	"model":                       "model",
	"prompt":                      "messages",
	"messages":                    "messages",
	"tool_choice":                 "tool_choice",
	"tool_choice.function_name":   "tool_choice.name",
	"response_format.schema_json": "output_config.format.schema",
	"priority":                    strings.ToLower(edgehttp.HeaderPriority),
	"routing.residency":           strings.ToLower(edgehttp.HeaderResidency),
	"request_id":                  strings.ToLower(edgehttp.HeaderRequestID),
}

// field is the Messages API name of the first field a router status names.
func field(st *status.Status) string {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			f := br.GetFieldViolations()[0].GetField()
			if a, ok := routerFields[f]; ok {
				return a
			}
			base, _, _ := strings.Cut(f, "[")
			if base == "tools" {
				return strings.NewReplacer("[", ".", "]", "", "parameters_json", "input_schema").Replace(f)
			}
			if a, ok := routerFields[base]; ok {
				return a
			}
			return f
		}
	}
	return ""
}

// fromStatus maps the router's status to Anthropic's status and error type.
func fromStatus(err error) *httpError {
	if errors.Is(err, context.DeadlineExceeded) {
		return newError(http.StatusGatewayTimeout, typeTimeout, "the call did not finish within its deadline")
	}
	st, _ := status.FromError(err)
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange, codes.FailedPrecondition:
		if f := field(st); f != "" && !strings.HasPrefix(msg, f+":") {
			msg = f + ": " + msg
		}
		return newError(http.StatusBadRequest, typeInvalidRequest, msg)
	case codes.NotFound:
		return newError(http.StatusNotFound, typeNotFound, msg)
	case codes.Unauthenticated:
		return newError(http.StatusUnauthorized, typeAuthentication, msg)
	case codes.PermissionDenied:
		return newError(http.StatusForbidden, typePermission, msg)
	case codes.AlreadyExists:
		return newError(http.StatusConflict, typeInvalidRequest, msg)
	case codes.ResourceExhausted:
		e := newError(http.StatusTooManyRequests, typeRateLimit, msg)
		e.retryAfter = time.Second
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().IsValid() {
				e.retryAfter = ri.GetRetryDelay().AsDuration()
			}
		}
		return e
	case codes.Unavailable:
		// Anthropic's "overloaded": no pool could serve the call now.
		return newError(529, typeOverloaded, msg)
	case codes.DeadlineExceeded:
		return newError(http.StatusGatewayTimeout, typeTimeout, msg)
	case codes.Canceled:
		return newError(499, typeInvalidRequest, msg)
	}
	return newError(http.StatusInternalServerError, typeAPI, msg)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"type":"error","error":{"type":"api_error","message":"could not encode the response"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, e *httpError, requestID string) {
	if e.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.FormatInt(max(int64(math.Ceil(e.retryAfter.Seconds())), 1), 10))
	}
	writeJSON(w, e.status, apiError{Type: "error", Error: e.body, RequestID: requestID})
}

func quote(s string) string { return fmt.Sprintf("%s", edgehttp.Quote(s)) }
