package router

import "github.com/switchyard-dev/switchyard/router/dispatch"

// AuthenticateCaller checks the API key an edge read off its transport
// against the running fleet's tenants, exactly as every call's admission
// does, and returns the tenant ("" when the fleet has no tenants: calls are
// anonymous). Edges check it before reading a body: the gRPC edge in its tap
// handler, the HTTP edges before the request's body. The error is the core's
// (*dispatch.UnauthenticatedError).
func (s *Server) AuthenticateCaller(c dispatch.Caller) (tenant string, err error) {
	return s.disp.Generation().Tenants.Authenticate(c.APIKey)
}

// KeysRequired says whether the running fleet (it follows reloads) makes
// calls present an API key: some tenant has one. The HTTP edges ask it
// rather than reading the fleet's tenants themselves (the browser checks
// answer differently when keys guard the door).
func (s *Server) KeysRequired() bool { return s.disp.Generation().Tenants.Required() }
