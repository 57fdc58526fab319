package openai

import (
	"fmt"
	"net/http"
)

// BearerSource is a pool's bearer token from a cloud identity (Azure Entra
// ID, Google OAuth), kept fresh off the request path by its owner.
type BearerSource interface {
	// Bearer returns the current token, or why there is none. It must not block.
	Bearer() (string, error)
}

// BearerTransport returns an Options.RoundTripper that sends every request
// with "Authorization: Bearer <token>" from src (any api-key header is
// removed), after rewrite (nil: none) has adjusted the request's URL. A
// request without a token fails before it is sent; the error says why,
// never the token.
func BearerTransport(src BearerSource, rewrite func(*http.Request) error) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return &bearerTransport{next: next, src: src, rewrite: rewrite}
	}
}

type bearerTransport struct {
	next    http.RoundTripper
	src     BearerSource
	rewrite func(*http.Request) error
}

func (t *bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := t.src.Bearer()
	if err != nil {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, fmt.Errorf("no bearer token for the pool: %w", err)
	}
	c := r.Clone(r.Context())
	if t.rewrite != nil {
		if err := t.rewrite(c); err != nil {
			if r.Body != nil {
				_ = r.Body.Close()
			}
			return nil, err
		}
	}
	c.Header.Del("Api-Key")
	c.Header.Set("Authorization", "Bearer "+tok)
	return t.next.RoundTrip(c)
}

// CloseIdleConnections reaches the wrapped transport's.
func (t *bearerTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
