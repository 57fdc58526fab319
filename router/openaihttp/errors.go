package openaihttp

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// apiError is OpenAI's error object: {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

type errorBody struct {
	Error apiError `json:"error"`
}

// httpError is an error ready for the client: the HTTP status, OpenAI's body
// and, for 429, how long to wait.
type httpError struct {
	status     int
	body       apiError
	retryAfter time.Duration
}

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func newHTTPError(code int, typ, errCode, param, msg string) *httpError {
	return &httpError{status: code, body: apiError{Message: msg, Type: typ, Param: strp(param), Code: strp(errCode)}}
}

// OpenAI's error types.
const (
	typeInvalidRequest = "invalid_request_error"
	typeRateLimit      = "rate_limit_error"
	typeServer         = "server_error"
	typeTimeout        = "timeout_error"
)

// fromFieldError is a 400 for a request the edge refused before the router.
func fromFieldError(fe *fieldError) *httpError {
	return newHTTPError(http.StatusBadRequest, typeInvalidRequest, "invalid_value", fe.param, fe.Error())
}

// routerFields maps the router's GenerateRequest field paths (as its
// INVALID_ARGUMENT statuses name them in errdetails.BadRequest) to the OpenAI
// request's parameter.
var routerFields = map[string]string{
	"model":                         "model",
	"prompt":                        "prompt",
	"messages":                      "messages",
	"max_tokens":                    "max_tokens",
	"sampling.temperature":          "temperature",
	"sampling.top_p":                "top_p",
	"sampling.top_k":                "top_k",
	"sampling.stop":                 "stop",
	"sampling.presence_penalty":     "presence_penalty",
	"sampling.frequency_penalty":    "frequency_penalty",
	"priority":                      strings.ToLower(HeaderPriority),
	"routing.residency":             strings.ToLower(HeaderResidency),
	"request_id":                    strings.ToLower(HeaderRequestID),
	"continuation.generated_tokens": "max_tokens",
	"response_format.schema_json":   "response_format.json_schema.schema",
	"response_format.schema_name":   "response_format.json_schema.name",
	"tool_choice.mode":              "tool_choice",
	"tool_choice.function_name":     "tool_choice",
}

// violatedField is the first field path an INVALID_ARGUMENT status names in its
// errdetails.BadRequest ("" when it carries none: a backend's own refusal).
func violatedField(st *status.Status) string {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

// paramFor maps a GenerateRequest field path to the OpenAI parameter the
// client sent it as; "" for none.
func paramFor(field string, p *parsed) string {
	if field == "" {
		return ""
	}
	base, index, _ := strings.Cut(field, "[")
	if index != "" {
		// messages[3].role and tools[0].name keep their index and sub-field; sampling.stop[1] is "stop".
		if base == "messages" || base == "tools" {
			return field
		}
		field = base
	}
	param, ok := routerFields[field]
	if !ok {
		return field
	}
	if param == "max_tokens" && p != nil && p.maxTokensParam != "" {
		return p.maxTokensParam
	}
	if param == "prompt" && p != nil && len(p.req.GetMessages()) > 0 {
		return "messages"
	}
	return param
}

// fromStatus maps the router's gRPC status to the HTTP status and OpenAI's
// error body: 400 invalid_request_error naming the field, 401, 403, 404
// model_not_found, 429 with Retry-After from RetryInfo, 503, 504, 500.
func fromStatus(err error, p *parsed) *httpError {
	if errors.Is(err, context.DeadlineExceeded) {
		return newHTTPError(http.StatusGatewayTimeout, typeTimeout, "deadline_exceeded", "", "the call did not finish within its deadline")
	}
	st, _ := status.FromError(err)
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange, codes.FailedPrecondition:
		return newHTTPError(http.StatusBadRequest, typeInvalidRequest, "invalid_value", paramFor(violatedField(st), p), msg)
	case codes.NotFound:
		return newHTTPError(http.StatusNotFound, typeInvalidRequest, "model_not_found", "model", msg)
	case codes.Unauthenticated:
		return newHTTPError(http.StatusUnauthorized, typeInvalidRequest, "invalid_api_key", "", msg)
	case codes.PermissionDenied:
		return newHTTPError(http.StatusForbidden, typeInvalidRequest, "permission_denied", "", msg)
	case codes.AlreadyExists:
		return newHTTPError(http.StatusConflict, typeInvalidRequest, "conflict", strings.ToLower(HeaderRequestID), msg)
	case codes.ResourceExhausted:
		e := newHTTPError(http.StatusTooManyRequests, typeRateLimit, "rate_limit_exceeded", "", msg)
		e.retryAfter = time.Second
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().IsValid() {
				e.retryAfter = ri.GetRetryDelay().AsDuration()
			}
		}
		return e
	case codes.Unavailable:
		return newHTTPError(http.StatusServiceUnavailable, typeServer, "service_unavailable", "", msg)
	case codes.DeadlineExceeded:
		return newHTTPError(http.StatusGatewayTimeout, typeTimeout, "deadline_exceeded", "", msg)
	case codes.Canceled:
		// The client left; nobody reads this answer. 499 is nginx's "client closed request".
		return newHTTPError(499, typeInvalidRequest, "canceled", "", msg)
	case codes.Unimplemented:
		return newHTTPError(http.StatusNotImplemented, typeInvalidRequest, "not_implemented", "", msg)
	}
	return newHTTPError(http.StatusInternalServerError, typeServer, "internal_error", "", msg)
}

// retryAfterSeconds is the Retry-After header value: whole seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	return strconv.FormatInt(max(s, 1), 10)
}
