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

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/internal/geo"
	"github.com/switchyard-dev/switchyard/internal/httpedge"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// method is one unary Admin method reachable as POST /api/v1/<Name>: its
// request message, and how the router's Operator interface answers it.
type method struct {
	newReq func() proto.Message
	call   func(op router.Operator, ctx context.Context, token string, req proto.Message) (proto.Message, error)
}

// change is a method that applies an operator change (router.ChangeOf reads
// the request) and answers with resp of what it did.
func change(newReq func() proto.Message, resp func(*router.Applied) proto.Message) method {
	return method{newReq: newReq, call: func(op router.Operator, ctx context.Context, token string, req proto.Message) (proto.Message, error) {
		c, _ := router.ChangeOf(req) // every change method's request is a change
		a, err := op.Apply(ctx, token, c)
		if err != nil {
			return nil, err
		}
		return resp(a), nil
	}}
}

func poolChange(a *router.Applied) proto.Message { return &pb.PoolChangeResponse{Pool: a.Pool} }

// methods are the Admin API's unary methods, by their gRPC names. The
// request and response bodies are their protojson forms (lowerCamelCase
// field names, as switchyardctl --json prints them).
var methods = map[string]method{
	"ListPools": {newReq: func() proto.Message { return new(pb.ListPoolsRequest) },
		call: func(op router.Operator, _ context.Context, token string, _ proto.Message) (proto.Message, error) {
			snap, err := op.Snapshot(token)
			if err != nil {
				return nil, err
			}
			return snap.Fleet, nil
		}},
	"SetWeight":           change(func() proto.Message { return new(pb.SetWeightRequest) }, poolChange),
	"Drain":               change(func() proto.Message { return new(pb.DrainRequest) }, func(a *router.Applied) proto.Message { return a.Drain }),
	"Resume":              change(func() proto.Message { return new(pb.ResumeRequest) }, poolChange),
	"SetCapacityOverride": change(func() proto.Message { return new(pb.SetCapacityOverrideRequest) }, poolChange),
	"SetPolicy": change(func() proto.Message { return new(pb.SetPolicyRequest) }, func(a *router.Applied) proto.Message {
		return &pb.SetPolicyResponse{Previous: a.Previous, Policy: a.Policy}
	}),
	"ExplainRoute": {newReq: func() proto.Message { return new(pb.ExplainRouteRequest) },
		call: func(op router.Operator, _ context.Context, token string, req proto.Message) (proto.Message, error) {
			return op.Explain(token, req.(*pb.ExplainRouteRequest).GetRequest())
		}},
	"ListAudit": {newReq: func() proto.Message { return new(pb.ListAuditRequest) },
		call: func(op router.Operator, ctx context.Context, token string, req proto.Message) (proto.Message, error) {
			entries, err := op.Audit(ctx, token, int(req.(*pb.ListAuditRequest).GetLimit()))
			if err != nil {
				return nil, err
			}
			return &pb.ListAuditResponse{Entries: entries}, nil
		}},
}

var (
	marshal   = protojson.MarshalOptions{EmitUnpopulated: true}
	unmarshal = protojson.UnmarshalOptions{}
)

// call serves POST /api/v1/<Method>: the body is the method's request in
// protojson, the answer its response, or {"code", "message"} with the HTTP
// status of the error's code (writeStatus).
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
	tok, err := token(r)
	if err != nil {
		writeStatus(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.opts.CallTimeout)
	defer cancel()
	resp, err := m.call(c.op, ctx, tok, req)
	if err != nil {
		writeStatus(w, err)
		return
	}
	httpedge.Trust(r.Context()) // a known admin token
	writeProto(w, resp)
}

// whoami serves GET /api/v1/whoami: {"role": "viewer" | "operator"}, the
// role the router's Operator interface grants the token.
func (c *Console) whoami(w http.ResponseWriter, r *http.Request) {
	tok, err := token(r)
	if err == nil {
		_, err = c.op.Authorize(tok, router.RoleViewer)
	}
	if err != nil {
		writeStatus(w, err)
		return
	}
	httpedge.Trust(r.Context()) // a known admin token
	role := "operator"
	if _, err := c.op.Authorize(tok, router.RoleOperator); err != nil {
		if dispatch.CodeOf(err) != dispatch.CodePermissionDenied {
			writeStatus(w, err)
			return
		}
		role = "viewer"
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

// poolLoad is a pool's backend load report as the page reads it.
type poolLoad struct {
	Running  int `json:"running"`
	Queued   int `json:"queued"`
	Capacity int `json:"capacity"`
}

// fleetJSON authorizes token as a viewer and returns the view.
func (c *Console) fleetJSON(token string) ([]byte, error) {
	snap, err := c.op.Snapshot(token)
	if err != nil {
		return nil, err
	}
	list := snap.Fleet
	raw, err := marshal.Marshal(list)
	if err != nil {
		return nil, err
	}
	v := fleetView{List: raw, Loads: map[string]poolLoad{}, Geographies: map[string]string{}, Home: snap.Region}
	for _, p := range list.GetPools() {
		v.Geographies[p.GetRegion()] = p.GetGeography()
		if l := p.GetBackendLoad(); l != nil {
			v.Loads[p.GetName()] = poolLoad{Running: int(l.GetRunning()), Queued: int(l.GetQueued()), Capacity: int(l.GetCapacity())}
		}
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
	tok, err := token(r)
	var b []byte
	if err == nil {
		b, err = c.fleetJSON(tok)
	}
	if err != nil {
		writeStatus(w, err)
		return
	}
	writeRaw(w, http.StatusOK, b)
}

// history serves GET /api/v1/history: the chart samples kept, oldest first.
func (c *Console) history(w http.ResponseWriter, r *http.Request) {
	tok, err := token(r)
	if err == nil {
		_, err = c.op.Authorize(tok, router.RoleViewer)
	}
	if err != nil {
		writeStatus(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"enabled":     c.opts.Gatherer != nil,
		"everyMillis": c.opts.SampleEvery.Milliseconds(),
		"samples":     c.hist.snapshot(),
	})
}

// token is the admin token of the request's "Authorization: Bearer" header
// ("" when it has none).
func token(r *http.Request) (string, error) {
	return router.BearerToken(r.Header.Get("Authorization"))
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

// httpStatus is the console's one table from the router's error codes to
// its wire: the HTTP status and the code's name in the JSON error (the
// canonical upper-case names the Admin API's gRPC codes have, which the page
// and switchyardctl --json show alike).
var httpStatus = map[dispatch.Code]struct {
	status int
	name   string
}{
	dispatch.CodeOK:                 {http.StatusOK, "OK"},
	dispatch.CodeInvalid:            {http.StatusBadRequest, "INVALID_ARGUMENT"},
	dispatch.CodeOutOfRange:         {http.StatusBadRequest, "OUT_OF_RANGE"},
	dispatch.CodeUnauthenticated:    {http.StatusUnauthorized, "UNAUTHENTICATED"},
	dispatch.CodePermissionDenied:   {http.StatusForbidden, "PERMISSION_DENIED"},
	dispatch.CodeNotFound:           {http.StatusNotFound, "NOT_FOUND"},
	dispatch.CodeFailedPrecondition: {http.StatusConflict, "FAILED_PRECONDITION"},
	dispatch.CodeAlreadyExists:      {http.StatusConflict, "ALREADY_EXISTS"},
	dispatch.CodeExhausted:          {http.StatusTooManyRequests, "RESOURCE_EXHAUSTED"},
	dispatch.CodeUnavailable:        {http.StatusServiceUnavailable, "UNAVAILABLE"},
	dispatch.CodeDeadlineExceeded:   {http.StatusGatewayTimeout, "DEADLINE_EXCEEDED"},
	dispatch.CodeCanceled:           {499, "CANCELLED"},
	dispatch.CodeUnimplemented:      {http.StatusNotImplemented, "UNIMPLEMENTED"},
	dispatch.CodeInternal:           {http.StatusInternalServerError, "INTERNAL"},
}

// maxMessage bounds an error message sent back (Admin messages may quote
// what the client sent).
const maxMessage = 512

// writeStatus answers with err (the router's, dispatch.CodeOf) as
// {"code", "message"} under its HTTP status.
func writeStatus(w http.ResponseWriter, err error) {
	msg := publicText(err)
	st, ok := httpStatus[dispatch.CodeOf(err)]
	if !ok {
		st = httpStatus[dispatch.CodeInternal]
	}
	writeError(w, st.status, st.name, msg)
}

// publicText is err's message as a client may read it, cut to maxMessage.
func publicText(err error) string {
	msg := dispatch.PublicText(err)
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
		msg += "…"
	}
	return msg
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
