package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"
)

// Authenticate checks the caller's API key in ctx (incoming metadata
// x-api-key, or authorization: Bearer) against the fleet's tenants, exactly
// as every call's admission does, and returns the tenant ("" when the fleet
// has no tenants: calls are anonymous). An edge calls it to refuse an unknown
// caller before reading a request body (the HTTP front door does; the gRPC
// edge checks in its tap handler). The error is a gRPC status
// (UNAUTHENTICATED).
func (s *Server) Authenticate(ctx context.Context) (tenant string, err error) {
	tenant, err = s.authenticate(ctx, s.state.Load())
	return tenant, toStatus(err)
}

// authenticate maps the caller's API key (metadata x-api-key, or
// authorization: Bearer) to a tenant. With no tenants configured, calls are
// anonymous.
func (s *Server) authenticate(ctx context.Context, st *fleetState) (string, error) {
	if len(st.tenants) == 0 {
		return "", nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	key := ""
	if v := md.Get("x-api-key"); len(v) > 0 {
		key = v[0]
	} else {
		key, _ = bearerToken(md)
	}
	if key == "" {
		return "", fmt.Errorf("%w: missing API key (x-api-key or authorization: Bearer)", errUnauthenticated)
	}
	sum := sha256.Sum256([]byte(key))
	tenant, ok := st.tenants[hex.EncodeToString(sum[:])]
	if !ok {
		return "", fmt.Errorf("%w: unknown API key", errUnauthenticated)
	}
	return tenant, nil
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
