package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"
)

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
	} else if v := md.Get("authorization"); len(v) > 0 {
		key, _ = strings.CutPrefix(v[0], "Bearer ")
	}
	if key == "" {
		return "", fmt.Errorf("%w: missing API key (metadata x-api-key or authorization: Bearer)", errUnauthenticated)
	}
	sum := sha256.Sum256([]byte(key))
	tenant, ok := st.tenants[hex.EncodeToString(sum[:])]
	if !ok {
		return "", fmt.Errorf("%w: unknown API key", errUnauthenticated)
	}
	return tenant, nil
}
