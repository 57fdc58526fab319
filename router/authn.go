package router

import (
	"context"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// Authenticate checks the caller's API key in ctx (incoming metadata
// x-api-key, or authorization: Bearer) against the fleet's tenants, exactly
// as every call's admission does, and returns the tenant ("" when the fleet
// has no tenants: calls are anonymous). The gRPC edge checks in its tap
// handler before any message is read. The error is a gRPC status
// (UNAUTHENTICATED).
func (s *Server) Authenticate(ctx context.Context) (tenant string, err error) {
	tenant, err = s.disp.Generation().Tenants.Authenticate(callerFromMetadata(ctx).APIKey)
	return tenant, toStatus(err)
}

// AuthenticateCaller is Authenticate for an edge that read the caller's
// credential off its own transport (the HTTP edges refuse an unknown caller
// before reading a body). The error is the core's
// (*dispatch.UnauthenticatedError).
func (s *Server) AuthenticateCaller(c dispatch.Caller) (tenant string, err error) {
	return s.disp.Generation().Tenants.Authenticate(c.APIKey)
}

// KeysRequired says whether the running fleet (it follows reloads) makes
// calls present an API key: some tenant has one. The HTTP edges ask it
// rather than reading the fleet's tenants themselves (the browser checks
// answer differently when keys guard the door).
func (s *Server) KeysRequired() bool { return s.disp.Generation().Tenants.Required() }

// callerFromMetadata reads the caller's API key off a gRPC call's incoming
// metadata: x-api-key, else the token of "authorization: Bearer".
func callerFromMetadata(ctx context.Context) dispatch.Caller {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-api-key"); len(v) > 0 {
		return dispatch.Caller{APIKey: v[0]}
	}
	key, _ := bearerToken(md)
	return dispatch.Caller{APIKey: key}
}

// bearerToken returns the token of the "authorization: Bearer <token>"
// header, and whether an authorization header was sent at all (a header in
// another form gives present true and an empty token). The Admin API and the
// tenant check both read credentials through it.
func bearerToken(md metadata.MD) (token string, present bool) {
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", false
	}
	token, _ = strings.CutPrefix(vals[0], "Bearer ")
	if token == vals[0] {
		return "", true
	}
	return token, true
}
