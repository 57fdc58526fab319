// Package httpedge bounds every phase of an HTTP connection on switchyard's
// listeners (the OpenAI-compatible front door, the operator console and the
// metrics listener):
//
//   - accept: Listener caps the connections served at once, and caps apart
//     the connections that have not authenticated yet. When either cap is
//     reached, a new connection takes the place of the oldest
//     unauthenticated one, so clients without a key can never hold every
//     slot: a client with a key connects, authenticates in its first request
//     and is counted apart from then on (Trust).
//   - headers and idle keep-alive: the http.Server's ReadHeaderTimeout and
//     IdleTimeout (Harden sets them when unset).
//   - body: the http.Server's ReadTimeout runs from the request's first
//     byte; Handler lifts it once the body has been read to its end (or at
//     once for a request without one), so a long answer (a stream) is not
//     cut, and a client's disconnect is still noticed.
//   - refusals: Handler answers a request whose body was not read (a 401,
//     404, 405, 403, 421...) with "Connection: close" and, when the handler
//     returns, ends the body's read at once. Go's net/http would otherwise
//     wait to drain up to 256 KiB of an unread body before reusing or
//     closing the connection, with no deadline of its own: a client that
//     announces a body and never sends it held the connection for ever.
package httpedge

import (
	"container/list"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ListenerOptions configure NewListener.
type ListenerOptions struct {
	// MaxConns is how many connections are served at once (required, > 0).
	MaxConns int
	// MaxUntrusted is how many of them may be connections on which no
	// request has authenticated yet (default MaxConns/4, at least 1; at most
	// MaxConns).
	MaxUntrusted int
}

// Listener is a net.Listener that caps connections, with a separate cap on
// those not yet trusted (see the package comment). Its ConnContext must be
// the http.Server's ConnContext for Trust to find a request's connection.
// Safe for concurrent use.
type Listener struct {
	net.Listener
	max, maxUntrusted int

	mu        sync.Mutex
	open      int
	untrusted list.List // *Conn, oldest first

	evicted atomic.Int64
	refused atomic.Int64
}

// NewListener wraps l.
func NewListener(l net.Listener, o ListenerOptions) *Listener {
	if o.MaxConns <= 0 {
		o.MaxConns = 1
	}
	if o.MaxUntrusted <= 0 {
		o.MaxUntrusted = max(o.MaxConns/4, 1)
	}
	o.MaxUntrusted = min(o.MaxUntrusted, o.MaxConns)
	return &Listener{Listener: l, max: o.MaxConns, maxUntrusted: o.MaxUntrusted}
}

// Accept returns the next connection. A connection past a cap closes the
// oldest untrusted connection to make room; when every connection is trusted
// and MaxConns are open, the new one is closed at once and Accept waits for
// the next.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, victim := l.admit(c)
		if victim != nil {
			_ = victim.Conn.Close() // its owner's Close releases its place
		}
		if tc != nil {
			return tc, nil
		}
		l.refused.Add(1)
		_ = c.Close()
	}
}

// admit counts a new connection, choosing the untrusted connection it
// replaces when a cap is reached (closed by the caller, outside the lock).
func (l *Listener) admit(c net.Conn) (tc *Conn, victim *Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.max || l.untrusted.Len() >= l.maxUntrusted {
		front := l.untrusted.Front()
		if front == nil {
			return nil, nil
		}
		victim = front.Value.(*Conn)
		l.untrusted.Remove(front)
		victim.elem = nil
		victim.evicted = true
		l.open-- // its place goes to the new connection now
		l.evicted.Add(1)
	}
	l.open++
	tc = &Conn{Conn: c, l: l}
	tc.elem = l.untrusted.PushBack(tc)
	return tc, victim
}

// Stats reports the connections open now, how many of them are untrusted,
// and since the start how many were closed to make room (evicted) and how
// many were refused (every place held by a trusted connection).
func (l *Listener) Stats() (open, untrusted int, evicted, refused int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.untrusted.Len(), l.evicted.Load(), l.refused.Load()
}

// ConnContext is the http.Server's ConnContext: it lets Trust find the
// connection a request came on (through a TLS connection too).
func (l *Listener) ConnContext(ctx context.Context, c net.Conn) context.Context {
	for {
		if tc, ok := c.(*Conn); ok && tc.l == l {
			return context.WithValue(ctx, connKey{}, tc)
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return ctx
		}
		c = u.NetConn()
	}
}

type connKey struct{}

// Conn is a connection accepted by a Listener.
type Conn struct {
	net.Conn
	l       *Listener
	once    sync.Once
	elem    *list.Element // in l.untrusted while untrusted; guarded by l.mu
	evicted bool          // guarded by l.mu
	trusted atomic.Bool
}

// Close closes the connection and gives its place back.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		defer c.l.mu.Unlock()
		if c.evicted {
			return // its place went to the connection that evicted it
		}
		if c.elem != nil {
			c.l.untrusted.Remove(c.elem)
			c.elem = nil
		}
		c.l.open--
	})
	return err
}

// trust moves the connection out of the untrusted list.
func (c *Conn) trust() {
	if c.trusted.Swap(true) {
		return
	}
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if c.elem != nil {
		c.l.untrusted.Remove(c.elem)
		c.elem = nil
	}
}

// Trust marks the connection of the request whose context is ctx as
// authenticated: it no longer counts against MaxUntrusted and is never
// closed to make room. Without a Listener's connection in ctx it does
// nothing.
func Trust(ctx context.Context) {
	if c, ok := ctx.Value(connKey{}).(*Conn); ok {
		c.trust()
	}
}

// Trusted says whether the request's connection has been trusted (false
// without a Listener's connection in ctx).
func Trusted(ctx context.Context) bool {
	c, ok := ctx.Value(connKey{}).(*Conn)
	return ok && c.trusted.Load()
}

// ServerOptions are the bounds Harden sets on an http.Server when unset.
type ServerOptions struct {
	// ReadHeaderTimeout bounds reading a request's headers (default 10s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a request, headers and body, from its first
	// byte (default 30s); Handler lifts it once the body is in.
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long (default 2m).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (default 64 KiB).
	MaxHeaderBytes int
}

// Harden sets srv's unset timeouts and header limit from o (its defaults
// when zero), and when l is not nil, srv.ConnContext to l's.
func Harden(srv *http.Server, l *Listener, o ServerOptions) {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if srv.ReadHeaderTimeout <= 0 {
		srv.ReadHeaderTimeout = o.ReadHeaderTimeout
	}
	if srv.ReadTimeout <= 0 {
		srv.ReadTimeout = o.ReadTimeout
	}
	if srv.IdleTimeout <= 0 {
		srv.IdleTimeout = o.IdleTimeout
	}
	if srv.MaxHeaderBytes <= 0 {
		srv.MaxHeaderBytes = o.MaxHeaderBytes
	}
	if l != nil {
		srv.ConnContext = l.ConnContext
	}
}

// Handler wraps h so that a request whose body is not read to its end is
// answered with "Connection: close" (HTTP/1) and the unread rest is never
// waited for, and so that the server's read deadline is lifted once the
// body is in (see the package comment).
func Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if !hasBody(r) {
			_ = rc.SetReadDeadline(time.Time{})
			h.ServeHTTP(w, r)
			return
		}
		b := &body{ReadCloser: r.Body, rc: rc}
		r.Body = b
		ew := &edgeWriter{ResponseWriter: w, r: r, b: b}
		defer func() {
			if !b.done.Load() {
				// Whatever the handler did not read is never waited for:
				// net/http's drain of the rest fails at once and the
				// connection closes.
				_ = rc.SetReadDeadline(time.Now())
			}
		}()
		h.ServeHTTP(ew, r)
	})
}

// hasBody says whether a request announces a body.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// body notes when the request body has been read to its end, and then lifts
// the read deadline.
type body struct {
	io.ReadCloser
	rc   *http.ResponseController
	done atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done.Swap(true) {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// edgeWriter adds "Connection: close" to an HTTP/1 answer that starts
// before the body was read to its end.
type edgeWriter struct {
	http.ResponseWriter
	r       *http.Request
	b       *body
	started bool
}

func (w *edgeWriter) start() {
	if w.started {
		return
	}
	w.started = true
	if w.r.ProtoMajor == 1 && !w.b.done.Load() {
		w.ResponseWriter.Header().Set("Connection", "close")
	}
}

func (w *edgeWriter) WriteHeader(code int) {
	if code >= 200 { // 1xx informational answers are not the answer
		w.start()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *edgeWriter) Write(p []byte) (int, error) {
	w.start()
	return w.ResponseWriter.Write(p)
}

// Flush lets handlers that assert http.Flusher stream through the wrapper.
func (w *edgeWriter) Flush() {
	w.start()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *edgeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
