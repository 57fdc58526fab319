package routertest

import (
	"errors"
	"net"
	"net/http"
	"testing"
)

// HTTP is an HTTP server serving on loopback and a client for it.
type HTTP struct {
	// URL is "http://127.0.0.1:PORT".
	URL string
	// Client has a transport of its own, whose idle connections are closed
	// at cleanup (no connection outlives the test).
	Client *http.Client
}

// ServeHTTP serves srv on lis (Listen's, or one wrapping it) until cleanup,
// which closes the client's idle connections, then the server (and every
// connection it holds), and fails the test if Serve ended otherwise. A
// component behind srv that must stop first (a console's streams) registers
// its own cleanup after this call: cleanups run last registered first.
func ServeHTTP(t testing.TB, srv *http.Server, lis net.Listener) *HTTP {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("http serve: %v", err)
		}
	})
	return &HTTP{URL: "http://" + lis.Addr().String(), Client: &http.Client{Transport: tr}}
}
