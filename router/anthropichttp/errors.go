package anthropichttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/router/dispatch"
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

// routerFields maps the router's GenerateRequest field paths (as its
// *dispatch.InvalidError names them) to the Messages API's, for the front of
// a 400's message.
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

// field is the Messages API name of the first field a refusal of the
// router's names ("" for any other error: a backend's own refusal names
// none).
func field(err error) string {
	var inv *dispatch.InvalidError
	if !errors.As(err, &inv) || len(inv.Fields) == 0 {
		return ""
	}
	f := inv.Fields[0]
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

// wireError is how this edge answers one dispatch.Code: HTTP status and
// Anthropic's error type.
type wireError struct {
	status int
	typ    string
}

// wireErrors is the Anthropic edge's one table from the core's codes to its
// wire (a backend's refusal comes with its own code: dispatch.CodeOf reads
// it through dispatch.BackendVerdict). A code missing here answers 500
// api_error.
var wireErrors = map[dispatch.Code]wireError{
	dispatch.CodeInvalid:    {http.StatusBadRequest, typeInvalidRequest},
	dispatch.CodeOutOfRange: {http.StatusBadRequest, typeInvalidRequest},
	// A failed precondition is 400, as Google's canonical mapping of
	// FAILED_PRECONDITION has it, not the console's 409: anthropic-sdk-go
	// and the other Anthropic SDKs retry 409 (and 429, 5xx, 529) on their
	// own, and a call the system's state refuses is refused again the same
	// way; 400 tells the client to change the call. (The console's API
	// answers 409 Conflict for its state conflicts: another wire, another
	// table.)
	dispatch.CodeFailedPrecondition: {http.StatusBadRequest, typeInvalidRequest},
	dispatch.CodeNotFound:           {http.StatusNotFound, typeNotFound},
	dispatch.CodeUnauthenticated:    {http.StatusUnauthorized, typeAuthentication},
	dispatch.CodePermissionDenied:   {http.StatusForbidden, typePermission},
	// A request id already in flight for the tenant: a retry once the other
	// call ends can succeed.
	dispatch.CodeAlreadyExists: {http.StatusConflict, typeInvalidRequest},
	dispatch.CodeExhausted:     {http.StatusTooManyRequests, typeRateLimit},
	// Anthropic's "overloaded": no pool could serve the call now.
	dispatch.CodeUnavailable:      {529, typeOverloaded},
	dispatch.CodeDeadlineExceeded: {http.StatusGatewayTimeout, typeTimeout},
	// The client left; nobody reads this answer (nginx's "client closed request").
	dispatch.CodeCanceled: {499, typeInvalidRequest},
	// The Messages API has no type for it: an API error.
	dispatch.CodeUnimplemented: {http.StatusInternalServerError, typeAPI},
	dispatch.CodeInternal:      {http.StatusInternalServerError, typeAPI},
}

// fromError maps an error of the router's core (Server.CompleteAs,
// CompleteStreamAs, AuthenticateCaller) to Anthropic's status and error type
// by wireErrors. The message is dispatch.PublicText: the router's words,
// and a backend's only for its refusal of the request or a shortage; a
// 400's starts with the Messages API's name of the field at fault.
func fromError(err error) *httpError {
	code := dispatch.CodeOf(err)
	w, ok := wireErrors[code]
	if !ok {
		w = wireErrors[dispatch.CodeInternal]
	}
	msg := dispatch.PublicText(err)
	if w.status == http.StatusBadRequest {
		if f := field(err); f != "" && !strings.HasPrefix(msg, f+":") {
			msg = f + ": " + msg
		}
	}
	e := newError(w.status, w.typ, msg)
	if code == dispatch.CodeExhausted {
		e.retryAfter = max(dispatch.RetryAfter(err), time.Second)
	}
	return e
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
