package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard-dev/switchyard/internal/httpedge"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// watchStream carries Admin.WatchEvents in-process: it is the
// grpc.ServerStreamingServer the Admin method sends its events into, and
// hands them to the HTTP handler over a channel. Send blocks while the
// handler is busy (the router's event bus then drops and says so, as for a
// slow gRPC watcher) and fails once ctx ends.
type watchStream struct {
	ctx context.Context
	ch  chan *pb.Event
}

var _ grpc.ServerStreamingServer[pb.Event] = (*watchStream)(nil)

func (s *watchStream) Send(ev *pb.Event) error {
	select {
	case s.ch <- ev:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

func (s *watchStream) Context() context.Context     { return s.ctx }
func (s *watchStream) SetHeader(metadata.MD) error  { return nil }
func (s *watchStream) SendHeader(metadata.MD) error { return nil }
func (s *watchStream) SetTrailer(metadata.MD)       {}
func (s *watchStream) RecvMsg(any) error            { return io.EOF }
func (s *watchStream) SendMsg(m any) error {
	ev, ok := m.(*pb.Event)
	if !ok {
		return fmt.Errorf("console: unexpected message %T", m)
	}
	return s.Send(ev)
}

// recentEvents is how many of the router's recent events a live stream
// starts with (after hello), so the page shows earlier ejections and
// restores.
const recentEvents = 50

// writeTimeout bounds one write to a live stream: a browser that stops
// reading is cut off rather than holding the handler.
const writeTimeout = 10 * time.Second

// stream serves GET /api/v1/stream, a text/event-stream of:
//
//	event: event   data: a switchyard.v1.Event (protojson), from WatchEvents
//	event: fleet   data: the fleet view (as GET /api/v1/fleet), every FleetEvery
//	event: sample  data: the newest chart sample, as it is taken
//	event: end     data: {"message"} when the stream ends on the server's side
//
// The token is checked by WatchEvents when the stream opens and by
// ListPools on every fleet update, so a token removed from the config ends
// the stream within a second.
func (c *Console) stream(w http.ResponseWriter, r *http.Request) {
	if n := c.streams.Add(1); n > int64(c.opts.MaxStreams) {
		c.streams.Add(-1)
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", fmt.Sprintf("too many live console streams (at most %d)", c.opts.MaxStreams))
		return
	}
	defer c.streams.Add(-1)

	ctx, cancel := context.WithCancel(ctxWithToken(r.Context(), r))
	defer cancel()
	ws := &watchStream{ctx: ctx, ch: make(chan *pb.Event, 16)}
	done := make(chan error, 1)
	go func() { done <- c.admin.WatchEvents(&pb.WatchEventsRequest{Recent: recentEvents}, ws) }()
	defer func() {
		cancel()
		<-done
	}()

	// WatchEvents authorizes, then sends "hello": answer with the refusal as
	// a plain JSON error, or start the stream.
	var hello *pb.Event
	select {
	case hello = <-ws.ch:
	case err := <-done:
		done <- err // for the deferred wait
		writeStatus(w, err)
		return
	case <-ctx.Done():
		return
	case <-time.After(c.opts.CallTimeout):
		writeError(w, http.StatusGatewayTimeout, "DEADLINE_EXCEEDED", "the event stream did not open in time")
		return
	}
	httpedge.Trust(r.Context()) // WatchEvents accepted the token
	fleet, err := c.fleetJSON(ctx)
	if err != nil {
		writeStatus(w, err)
		return
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	send := func(kind string, data []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", kind, data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	sendEvent := func(ev *pb.Event) bool {
		b, err := marshal.Marshal(ev)
		return err == nil && send("event", b)
	}
	end := func(msg string) {
		b, _ := json.Marshal(map[string]string{"message": msg})
		send("end", b)
	}

	if !sendEvent(hello) || !send("fleet", fleet) {
		return
	}
	samples := c.hist.changed()
	if s, ok := c.hist.latest(); ok {
		if b, err := json.Marshal(s); err == nil && !send("sample", b) {
			return
		}
	}
	fleetTick := time.NewTicker(c.opts.FleetEvery)
	defer fleetTick.Stop()
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.stop:
			end("console shutting down")
			return
		case err := <-done:
			done <- err
			msg := "event stream ended"
			if err != nil {
				msg += ": " + err.Error()
			}
			end(msg)
			return
		case ev := <-ws.ch:
			if !sendEvent(ev) {
				return
			}
		case <-samples:
			samples = c.hist.changed()
			if s, ok := c.hist.latest(); ok {
				b, err := json.Marshal(s)
				if err != nil || !send("sample", b) {
					return
				}
			}
		case <-fleetTick.C:
			b, err := c.fleetJSON(ctx)
			if err != nil {
				if ctx.Err() == nil {
					end(err.Error())
				}
				return
			}
			if !send("fleet", b) {
				return
			}
		case <-keepAlive.C:
			_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
