package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// maxQuoted bounds a server's message quoted in an error.
const maxQuoted = 200

// apiFault is what an error response says.
type apiFault struct {
	message string
	kind    string // the error's type field, e.g. exceed_context_size_error
}

// parseFault reads the error shapes servers send: OpenAI's
// {"error":{"message","type"}}, TGI's {"error":"...","error_type"}, vLLM's
// {"object":"error","message"}, FastAPI's {"detail":...}.
func parseFault(body []byte) apiFault {
	var v struct {
		Error     json.RawMessage `json:"error"`
		ErrorType string          `json:"error_type"`
		Message   string          `json:"message"`
		Type      string          `json:"type"`
		Detail    json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(body, &v) != nil {
		return apiFault{message: string(body)}
	}
	f := apiFault{message: v.Message, kind: v.Type}
	if len(v.Error) > 0 && v.Error[0] == '{' {
		var e struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		}
		if json.Unmarshal(v.Error, &e) == nil {
			f.message, f.kind = e.Message, e.Type
		}
	} else if len(v.Error) > 0 && v.Error[0] == '"' {
		_ = json.Unmarshal(v.Error, &f.message)
		f.kind = v.ErrorType
	}
	if f.message == "" && len(v.Detail) > 0 {
		f.message = string(v.Detail)
	}
	if f.message == "" {
		f.message = string(body)
	}
	return f
}

// quote makes server text safe to put in an error: one line, printable, bounded.
func quote(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) > maxQuoted {
		cut := maxQuoted
		for cut > 0 && !utf8Start(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// overflow says whether a client-fault response is about the input being
// longer than the server's context window.
func overflow(code int, f apiFault) bool {
	if code == http.StatusRequestEntityTooLarge || f.kind == "exceed_context_size_error" {
		return true
	}
	m := strings.ToLower(f.message)
	for _, s := range []string{"context length", "context size", "context window", "maximum context", "too long", "too many tokens", "must be <=", "exceeds the"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// refusal is a 429/503 with a delay: the endpoint is out of room.
type refusal struct{ after time.Duration }

// httpError turns a non-2xx response into the status the router classifies:
// 429 and 503-with-Retry-After are shortages (RESOURCE_EXHAUSTED), 400, 404,
// 413 and 422 are the client's (INVALID_ARGUMENT naming its input), 401 and
// 403 mean the pool is misconfigured (UNAVAILABLE), anything else is the
// pool's failure (UNAVAILABLE). The body is read up to maxErrorBody.
func (b *Backend) httpError(resp *http.Response, ep *endpoint, in *built) (error, *refusal) {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	f := parseFault(body)
	code := resp.StatusCode
	msg := quote(f.message)
	where := fmt.Sprintf("pool %s endpoint %s", b.cfg.pool, ep.name)
	switch {
	case code == http.StatusTooManyRequests || (code == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != ""):
		after := retryAfter(resp.Header.Get("Retry-After"), time.Now(), b.cfg.maxRetryAfter)
		return status.Errorf(codes.ResourceExhausted, "%s: server out of room (HTTP %d), retry after %s: %s", where, code, after, msg), &refusal{after: after}
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		b.authFailed(ep, code)
		return status.Errorf(codes.Unavailable, "%s: server refused the pool's credentials (HTTP %d): check options %s/%s", where, code, OptAPIKeyEnv, OptAPIKeyFile), nil
	case code == http.StatusNotFound:
		return status.Errorf(codes.InvalidArgument, "model: %s: server does not serve it (HTTP 404): %s", where, msg), nil
	case code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge || code == http.StatusUnprocessableEntity:
		if overflow(code, f) {
			return status.Errorf(codes.InvalidArgument, "%s: longer than the context window of %s (HTTP %d): %s", in.field, where, code, msg), nil
		}
		return status.Errorf(codes.InvalidArgument, "%s: rejected by %s (HTTP %d): %s", in.field, where, code, msg), nil
	}
	return status.Errorf(codes.Unavailable, "%s: HTTP %d: %s", where, code, msg), nil
}

// retryAfter reads a Retry-After header (seconds or an HTTP date), capped;
// without one a refusal waits one second.
func retryAfter(v string, now time.Time, ceiling time.Duration) time.Duration {
	d := time.Second
	if v != "" {
		if s, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && s >= 0 {
			d = time.Duration(s * float64(time.Second))
		} else if t, err := http.ParseTime(v); err == nil {
			d = t.Sub(now)
		}
	}
	return min(max(d, 100*time.Millisecond), ceiling)
}

// errStreamCut is a stream that ended without its final chunk.
var errStreamCut = errors.New("stream ended without a final chunk or [DONE]")
