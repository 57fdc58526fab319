package console

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/internal/geo"
	"github.com/switchyard-dev/switchyard/internal/httpedge"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// method is one unary Admin method reachable as POST /api/v1/<Name>.
type method struct {
	newReq func() proto.Message
	call   func(a *router.Admin, ctx context.Context, req proto.Message) (proto.Message, error)
}

func unary[Req, Resp proto.Message](newReq func() Req, fn func(*router.Admin, context.Context, Req) (Resp, error)) method {
	return method{
		newReq: func() proto.Message { return newReq() },
		call: func(a *router.Admin, ctx context.Context, req proto.Message) (proto.Message, error) {
			return fn(a, ctx, req.(Req))
		},
	}
}

// methods are the Admin API's unary methods, by their gRPC names. The
// request and response bodies are their protojson forms (lowerCamelCase
// field names, as switchyardctl --json prints them).
var methods = map[string]method{
	"ListPools":           unary(func() *pb.ListPoolsRequest { return new(pb.ListPoolsRequest) }, (*router.Admin).ListPools),
	"SetWeight":           unary(func() *pb.SetWeightRequest { return new(pb.SetWeightRequest) }, (*router.Admin).SetWeight),
	"Drain":               unary(func() *pb.DrainRequest { return new(pb.DrainRequest) }, (*router.Admin).Drain),
	"Resume":              unary(func() *pb.ResumeRequest { return new(pb.ResumeRequest) }, (*router.Admin).Resume),
	"SetCapacityOverride": unary(func() *pb.SetCapacityOverrideRequest { return new(pb.SetCapacityOverrideRequest) }, (*router.Admin).SetCapacityOverride),
	"ExplainRoute":        unary(func() *pb.ExplainRouteRequest { return new(pb.ExplainRouteRequest) }, (*router.Admin).ExplainRoute),
	"SetPolicy":           unary(func() *pb.SetPolicyRequest { return new(pb.SetPolicyRequest) }, (*router.Admin).SetPolicy),
	"ListAudit":           unary(func() *pb.ListAuditRequest { return new(pb.ListAuditRequest) }, (*router.Admin).ListAudit),
}

var (
	marshal   = protojson.MarshalOptions{EmitUnpopulated: true}
	unmarshal = protojson.UnmarshalOptions{}
)

// call serves POST /api/v1/<Method>: the body is the method's request in
// protojson, the answer its response, or {"code", "message"} with the HTTP
// status of the gRPC code.
func (c *Console) call(w http.ResponseWriter, r *http.Request) {
	m, ok := methods[r.PathValue("method")]
	if !ok {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "unknown method (see docs/operators.md for the console's API)")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "INVALID_ARGUMENT", "content type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.opts.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "INVALID_ARGUMENT", "request body too large")
			return
		}
		writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "cannot read request body")
		return
	}
	req := m.newReq()
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := unmarshal.Unmarshal(body, req); err != nil {
			writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "request body is not a valid "+string(req.ProtoReflect().Descriptor().Name())+" in JSON")
			return
		}
	}
	ctx, cancel := context.WithTimeout(ctxWithToken(r.Context(), r), c.opts.CallTimeout)
	defer cancel()
	resp, err := m.call(c.admin, ctx, req)
	if err != nil {
		writeStatus(w, err)
		return
	}
	httpedge.Trust(r.Context()) // a known admin token
	writeProto(w, resp)
}

// whoami serves GET /api/v1/whoami: {"role": "viewer" | "operator"}. The
// role is found by the Admin API itself: ListPools needs a viewer, and a
// SetWeight naming no pool is authorized for the operator role before the
// missing pool is refused, so it changes nothing and tells the two apart.
func (c *Console) whoami(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(ctxWithToken(r.Context(), r), c.opts.CallTimeout)
	defer cancel()
	if _, err := c.admin.ListPools(ctx, &pb.ListPoolsRequest{}); err != nil {
		writeStatus(w, err)
		return
	}
	httpedge.Trust(r.Context()) // a known admin token
	role := "operator"
	_, err := c.admin.SetWeight(ctx, &pb.SetWeightRequest{})
	switch status.Code(err) {
	case codes.PermissionDenied:
		role = "viewer"
	case codes.InvalidArgument:
	default:
		writeStatus(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"role": role})
}

// fleetView is the fleet as the page draws it: the ListPools answer, each
// pool's latest backend load report, and each region's geography.
type fleetView struct {
	List        json.RawMessage     `json:"list"`
	Loads       map[string]poolLoad `json:"loads"`
	Geographies map[string]string   `json:"geographies"`
	Home        string              `json:"home"`
}

// poolLoad is router.PoolLoad as the page reads it.
type poolLoad struct {
	Running  int `json:"running"`
	Queued   int `json:"queued"`
	Capacity int `json:"capacity"`
}

// fleetJSON authorizes through ListPools (viewer) and returns the view.
func (c *Console) fleetJSON(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
	defer cancel()
	list, err := c.admin.ListPools(ctx, &pb.ListPoolsRequest{})
	if err != nil {
		return nil, err
	}
	raw, err := marshal.Marshal(list)
	if err != nil {
		return nil, err
	}
	v := fleetView{List: raw, Loads: map[string]poolLoad{}, Geographies: map[string]string{}, Home: c.opts.Server.Region()}
	for name, l := range c.opts.Server.PoolLoads() {
		v.Loads[name] = poolLoad(l)
	}
	for _, p := range list.GetPools() {
		v.Geographies[p.GetRegion()] = p.GetGeography()
	}
	if v.Home != "" {
		if _, ok := v.Geographies[v.Home]; !ok {
			v.Geographies[v.Home] = geo.GeographyOf(v.Home)
		}
	}
	return json.Marshal(v)
}

// fleet serves GET /api/v1/fleet.
func (c *Console) fleet(w http.ResponseWriter, r *http.Request) {
	b, err := c.fleetJSON(ctxWithToken(r.Context(), r))
	if err != nil {
		writeStatus(w, err)
		return
	}
	writeRaw(w, http.StatusOK, b)
}

// history serves GET /api/v1/history: the chart samples kept, oldest first.
func (c *Console) history(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(ctxWithToken(r.Context(), r), c.opts.CallTimeout)
	defer cancel()
	if _, err := c.admin.ListPools(ctx, &pb.ListPoolsRequest{}); err != nil {
		writeStatus(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"enabled":     c.opts.Gatherer != nil,
		"everyMillis": c.opts.SampleEvery.Milliseconds(),
		"samples":     c.hist.snapshot(),
	})
}

// withAuthorization puts an Authorization header value into ctx as the
// incoming gRPC metadata the Admin service reads.
func withAuthorization(ctx context.Context, auth string) context.Context {
	md := metadata.MD{}
	if auth != "" {
		md.Set("authorization", auth)
	}
	return metadata.NewIncomingContext(ctx, md)
}

// sameOrigin refuses API calls made by pages of another origin: a browser
// names the calling page in Origin and Sec-Fetch-Site. Navigations to the
// page itself are not API calls and pass.
func sameOrigin(r *http.Request) bool {
	if !strings.HasPrefix(r.URL.Path, "/api/") {
		return true
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s == "cross-site" || s == "same-site" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// httpCode is the HTTP status of a gRPC code.
func httpCode(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.FailedPrecondition, codes.Aborted, codes.AlreadyExists:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.Canceled:
		return 499
	case codes.Unimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// maxMessage bounds an error message sent back (Admin messages may quote
// what the client sent).
const maxMessage = 512

func writeStatus(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	msg := st.Message()
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
		msg += "…"
	}
	writeError(w, httpCode(st.Code()), telemetry.CodeName(st.Code()), msg)
}

func writeError(w http.ResponseWriter, code int, name, msg string) {
	writeJSON(w, code, map[string]string{"code": name, "message": msg})
}

func writeProto(w http.ResponseWriter, m proto.Message) {
	b, err := marshal.Marshal(m)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "INTERNAL", "cannot encode the answer")
		return
	}
	writeRaw(w, http.StatusOK, b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"code":"INTERNAL","message":"cannot encode the answer"}`)
	}
	writeRaw(w, code, b)
}

func writeRaw(w http.ResponseWriter, code int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
