package console

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/switchyard-dev/switchyard/internal/httpedge"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
)

// recentEvents is how many of the router's recent events a live stream
// starts with (after hello), so the page shows earlier ejections and
// restores.
const recentEvents = 50

// writeTimeout bounds one write to a live stream: a browser that stops
// reading is cut off rather than holding the handler.
const writeTimeout = 10 * time.Second

// stream serves GET /api/v1/stream, a text/event-stream of:
//
//	event: event   data: a switchyard.v1.Event (protojson), from Operator.Watch
//	event: fleet   data: the fleet view (as GET /api/v1/fleet), every FleetEvery
//	event: sample  data: the newest chart sample, as it is taken
//	event: end     data: {"message"} when the stream ends on the server's side
//
// The token is checked when the stream opens (Operator.Watch, which also
// ends the watch when a reload removes the token) and on every fleet update
// (Operator.Snapshot).
func (c *Console) stream(w http.ResponseWriter, r *http.Request) {
	if n := c.streams.Add(1); n > int64(c.opts.MaxStreams) {
		c.streams.Add(-1)
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", fmt.Sprintf("too many live console streams (at most %d)", c.opts.MaxStreams))
		return
	}
	defer c.streams.Add(-1)

	tok, err := token(r)
	var watch *router.Watch
	if err == nil {
		watch, err = c.op.Watch(r.Context(), tok, recentEvents)
	}
	if err != nil { // refused: a plain JSON error
		writeStatus(w, err)
		return
	}
	defer watch.Close()
	httpedge.Trust(r.Context()) // Watch accepted the token
	fleet, err := c.fleetJSON(tok)
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

	// The watch's first event is its "hello"; the recent events follow it.
	if !sendEvent(<-watch.Events()) || !send("fleet", fleet) {
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
		case <-r.Context().Done():
			return
		case <-c.stop:
			end("console shutting down")
			return
		case <-watch.Done():
			msg := "event stream ended"
			if err := watch.Err(); err != nil {
				msg += ": " + publicText(err)
			}
			end(msg)
			return
		case ev := <-watch.Events():
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
			b, err := c.fleetJSON(tok)
			if err != nil {
				end(publicText(err))
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
