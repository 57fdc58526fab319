package openaihttp

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/router/dispatch"
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
// *dispatch.InvalidError names them) to the OpenAI request's parameter.
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

// violatedField is the first field path a refusal of the router's names
// ("" for any other error: a backend's own refusal names none).
func violatedField(err error) string {
	var inv *dispatch.InvalidError
	if errors.As(err, &inv) && len(inv.Fields) > 0 {
		return inv.Fields[0]
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

// wireError is how this edge answers one dispatch.Code: HTTP status,
// OpenAI's error type and code, and the param when the code implies one.
type wireError struct {
	status    int
	typ, code string
	param     string
}

// wireErrors is the OpenAI edge's one table from the core's codes to its
// wire (a backend's refusal comes with its own code: dispatch.CodeOf reads
// it through dispatch.BackendVerdict). A code missing here answers 500.
var wireErrors = map[dispatch.Code]wireError{
	dispatch.CodeInvalid:    {http.StatusBadRequest, typeInvalidRequest, "invalid_value", ""},
	dispatch.CodeOutOfRange: {http.StatusBadRequest, typeInvalidRequest, "invalid_value", ""},
	// A failed precondition is 400, as Google's canonical mapping of
	// FAILED_PRECONDITION has it, not the console's 409: openai-go and the
	// other OpenAI SDKs retry 409 (and 429, 5xx) on their own, and a call
	// the system's state refuses is refused again the same way; 400 tells
	// the client to change the call. (The console's API, whose callers are
	// its own page and operators, answers 409 Conflict for its state
	// conflicts: another wire, another table.)
	dispatch.CodeFailedPrecondition: {http.StatusBadRequest, typeInvalidRequest, "invalid_value", ""},
	dispatch.CodeNotFound:           {http.StatusNotFound, typeInvalidRequest, "model_not_found", "model"},
	dispatch.CodeUnauthenticated:    {http.StatusUnauthorized, typeInvalidRequest, "invalid_api_key", ""},
	dispatch.CodePermissionDenied:   {http.StatusForbidden, typeInvalidRequest, "permission_denied", ""},
	// A request id already in flight for the tenant: a retry once the other
	// call ends can succeed, so the SDKs' own retry of 409 is right here.
	dispatch.CodeAlreadyExists:    {http.StatusConflict, typeInvalidRequest, "conflict", strings.ToLower(HeaderRequestID)},
	dispatch.CodeExhausted:        {http.StatusTooManyRequests, typeRateLimit, "rate_limit_exceeded", ""},
	dispatch.CodeUnavailable:      {http.StatusServiceUnavailable, typeServer, "service_unavailable", ""},
	dispatch.CodeDeadlineExceeded: {http.StatusGatewayTimeout, typeTimeout, "deadline_exceeded", ""},
	// The client left; nobody reads this answer. 499 is nginx's "client closed request".
	dispatch.CodeCanceled:      {499, typeInvalidRequest, "canceled", ""},
	dispatch.CodeUnimplemented: {http.StatusNotImplemented, typeInvalidRequest, "not_implemented", ""},
	dispatch.CodeInternal:      {http.StatusInternalServerError, typeServer, "internal_error", ""},
}

// fromError maps an error of the router's core (Server.CompleteAs and the
// other *As methods, AuthenticateCaller) to the HTTP status and OpenAI's
// error body by wireErrors: 400 invalid_request_error naming the field,
// 401, 403, 404 model_not_found, 409, 429 with Retry-After, 503, 504, 500.
// The message is dispatch.PublicText: the router's words, and a backend's
// only for its refusal of the request or a shortage. p, when the body was
// parsed, names params as the client sent them (max_completion_tokens,
// messages).
func fromError(err error, p *parsed) *httpError {
	code := dispatch.CodeOf(err)
	w, ok := wireErrors[code]
	if !ok {
		w = wireErrors[dispatch.CodeInternal]
	}
	msg := dispatch.PublicText(err)
	param := w.param
	if w.status == http.StatusBadRequest {
		param = paramFor(violatedField(err), p)
	}
	e := newHTTPError(w.status, w.typ, w.code, param, msg)
	if code == dispatch.CodeExhausted {
		e.retryAfter = max(dispatch.RetryAfter(err), time.Second)
	}
	return e
}

// retryAfterSeconds is the Retry-After header value: whole seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	return strconv.FormatInt(max(s, 1), 10)
}
