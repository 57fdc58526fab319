// Package edgehttp holds what switchyard's HTTP edges share: the caller's
// credential read off the request's headers (Caller), the request id a call
// and its answers carry (RequestID), the X-Switchyard-* routing headers read
// into the router's request fields and the route written back, bounded body
// reads and quoting of client input. It is a helper, not an edge: it imports
// the core (router/dispatch) and the protobuf types, never package router or
// an edge, so every edge may use it and no edge imports another
// (router/anthropichttp uses all of it; router/openaihttp its Caller and
// RequestID, with its own copies of the header rules under the same names).
package edgehttp

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/internal/httpedge"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// Request headers that steer routing (case-insensitive).
const (
	HeaderCallerRegion         = "X-Switchyard-Caller-Region"
	HeaderResidency            = "X-Switchyard-Residency"
	HeaderPriority             = "X-Switchyard-Priority"
	HeaderPreferredCloud       = "X-Switchyard-Preferred-Cloud"
	HeaderPreferredAccelerator = "X-Switchyard-Preferred-Accelerator"
	HeaderTimeout              = "X-Switchyard-Timeout"
	HeaderRequestID            = "X-Request-Id"
)

// Response headers (and, for streams, trailers) naming the route.
const (
	HeaderPool        = "X-Switchyard-Pool"
	HeaderCloud       = "X-Switchyard-Cloud"
	HeaderRegion      = "X-Switchyard-Region"
	HeaderAccelerator = "X-Switchyard-Accelerator"
	HeaderAttempts    = "X-Switchyard-Attempts"
	HeaderPoolsTried  = "X-Switchyard-Pools-Tried"
)

// RouteHeaders are the route headers in the order streams declare them as trailers.
var RouteHeaders = []string{HeaderPool, HeaderCloud, HeaderRegion, HeaderAccelerator, HeaderAttempts, HeaderPoolsTried}

// Bounds on client-chosen values.
const (
	MaxHintBytes = 64
	MaxTimeout   = 10 * time.Minute
	maxQuote     = 64
)

// FieldError is client input refused for one field (a request field or a
// header, lower-case).
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Bad is a FieldError.
func Bad(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Caller is the caller as the request's headers present it: the API key of
// X-Api-Key, else the token of "Authorization: Bearer <token>" (an
// Authorization in another form presents none), the same two the gRPC edge
// reads from a call's metadata. The router checks it
// (Server.AuthenticateCaller before the body is read, then every call's
// admission); the edge never decides about keys itself.
func Caller(h http.Header) dispatch.Caller {
	if k := h.Get("X-Api-Key"); k != "" {
		return dispatch.Caller{APIKey: k}
	}
	if token, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer "); ok {
		return dispatch.Caller{APIKey: token}
	}
	return dispatch.Caller{}
}

// RequestID picks the request id of a call from the X-Request-Id value the
// client sent (sent; surrounding spaces do not count) and the id its answers
// name. Without one, a new id (dispatch.NewRequestID) is both. With one that
// dispatch.CheckRequestID accepts, it is both. One it refuses is never
// echoed: the answers name a new id, while the call carries the client's and
// the router refuses it at admission with the field request_id (each edge
// says x-request-id), after the checks that come before it, as for an id
// sent over gRPC.
func RequestID(sent string) (call, answer string) {
	call = strings.TrimSpace(sent)
	switch {
	case call == "":
		call = dispatch.NewRequestID()
		return call, call
	case dispatch.CheckRequestID(strings.ToLower(HeaderRequestID), call) != nil:
		return call, dispatch.NewRequestID()
	}
	return call, call
}

// Hints are what the routing headers ask for.
type Hints struct {
	Routing   *pb.RoutingHints // nil when no hint was sent
	Priority  pb.Priority
	RequestID string
	Timeout   time.Duration // 0: none
}

// ReadHints reads the X-Switchyard-* headers and X-Request-Id.
func ReadHints(h http.Header) (Hints, error) {
	var out Hints
	switch v := strings.ToLower(strings.TrimSpace(h.Get(HeaderPriority))); v {
	case "interactive":
		out.Priority = pb.Priority_PRIORITY_INTERACTIVE
	case "standard":
		out.Priority = pb.Priority_PRIORITY_STANDARD
	case "batch":
		out.Priority = pb.Priority_PRIORITY_BATCH
	case "":
	default:
		return out, Bad(strings.ToLower(HeaderPriority), "must be interactive, standard or batch, got %s", Quote(v))
	}
	r := &pb.RoutingHints{}
	for _, hint := range []struct {
		header string
		dst    *string
	}{
		{HeaderCallerRegion, &r.CallerRegion},
		{HeaderResidency, &r.Residency},
		{HeaderPreferredCloud, &r.PreferredCloud},
		{HeaderPreferredAccelerator, &r.PreferredAccelerator},
	} {
		v := strings.TrimSpace(h.Get(hint.header))
		if len(v) > MaxHintBytes {
			return out, Bad(strings.ToLower(hint.header), "at most %d bytes, got %d", MaxHintBytes, len(v))
		}
		*hint.dst = strings.ToLower(v)
	}
	if r.CallerRegion != "" || r.Residency != "" || r.PreferredCloud != "" || r.PreferredAccelerator != "" {
		out.Routing = r
	}
	out.RequestID = strings.TrimSpace(h.Get(HeaderRequestID))
	if v := strings.TrimSpace(h.Get(HeaderTimeout)); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > MaxTimeout {
			return out, Bad(strings.ToLower(HeaderTimeout), "must be a duration in (0, %s] such as 30s or 1500ms, got %s", MaxTimeout, Quote(v))
		}
		out.Timeout = d
	}
	return out, nil
}

// SetRouteHeaders writes the route as X-Switchyard-* headers (or trailers,
// when called after the body of a stream that declared them).
func SetRouteHeaders(h http.Header, r *pb.Route) {
	if r == nil {
		return
	}
	h.Set(HeaderPool, r.GetPool())
	h.Set(HeaderCloud, r.GetCloud())
	h.Set(HeaderRegion, r.GetRegion())
	h.Set(HeaderAccelerator, r.GetAccelerator())
	h.Set(HeaderAttempts, strconv.Itoa(int(r.GetAttempts())))
	if len(r.GetPoolsTried()) > 0 {
		h.Set(HeaderPoolsTried, strings.Join(r.GetPoolsTried(), ","))
	}
}

// Body read failures.
var (
	ErrTooLarge = errors.New("request body too large")
	ErrSlowBody = errors.New("request body not received in time")
)

// ReadBody reads r's body, at most limit bytes, within timeout. On failure
// the connection is marked to close (the rest of the body is never read).
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) ([]byte, error) {
	if r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, r.ContentLength, limit)
	}
	rc := http.NewResponseController(w)
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); !ok || srv.ReadTimeout <= 0 || srv.ReadTimeout > timeout {
		// The server's ReadTimeout, counted from the request's first byte,
		// is the deadline when it is the sooner one.
		_ = rc.SetReadDeadline(time.Now().Add(timeout))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		w.Header().Set("Connection", "close")
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("%w: the limit is %d bytes", ErrTooLarge, limit)
		}
		return nil, fmt.Errorf("%w (%s)", ErrSlowBody, timeout)
	}
	// No deadline while the call runs: a disconnect is noticed by the server's background read.
	_ = rc.SetReadDeadline(time.Time{})
	// A whole request came in (after the key check, with tenants): the
	// connection no longer counts among the unauthenticated ones.
	httpedge.Trust(r.Context())
	return body, nil
}

// Quote quotes client input for an error message, cut so an error never
// grows with what the client sent.
func Quote(s string) string {
	if len(s) <= maxQuote {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:maxQuote], len(s))
}
