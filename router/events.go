package router

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchyard-dev/switchyard/internal/clock"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/control"
)

// eventBus fans events out to watchers (Operator.Watch: the Admin API's
// WatchEvents, the console's live stream). publish never blocks: a
// subscriber that falls more than its buffer behind loses events (and is
// told so by a "dropped" event when it catches up). Safe for concurrent use.
type eventBus struct {
	// self is the actor of the events this replica decides on its own
	// (ejections, health, reloads, counting mode): "router <replica>".
	self  string
	clock clock.Clock
	mu    sync.Mutex
	subs  map[*subscriber]struct{}
	// recent are the last maxRecentEvents events, oldest first (a watcher
	// that connects is shown them: WatchEventsRequest.recent).
	recent []*pb.Event
}

// maxRecentEvents bounds the events kept for watchers that connect later.
const maxRecentEvents = 100

// subscriberBuffer is how many new events a watcher may fall behind by
// before it loses some.
const subscriberBuffer = 256

type subscriber struct {
	ch      chan *pb.Event
	dropped int
}

func newEventBus(replica string, c clock.Clock) *eventBus {
	return &eventBus{self: "router " + replica, clock: c, subs: map[*subscriber]struct{}{}}
}

func (b *eventBus) subscribe() *subscriber { return b.subscribeWith(nil, 0) }

// subscribeWith subscribes with first (when not nil) and up to n of the most
// recent events, oldest first, already in the subscriber's channel: none is
// both among them and sent again, none lost between.
func (b *eventBus) subscribeWith(first *pb.Event, n int) *subscriber {
	b.mu.Lock()
	defer b.mu.Unlock()
	n = min(max(n, 0), len(b.recent))
	sub := &subscriber{ch: make(chan *pb.Event, subscriberBuffer+1+n)}
	if first != nil {
		sub.ch <- first
	}
	for _, ev := range b.recent[len(b.recent)-n:] {
		sub.ch <- ev
	}
	b.subs[sub] = struct{}{}
	return sub
}

func (b *eventBus) unsubscribe(sub *subscriber) {
	b.mu.Lock()
	delete(b.subs, sub)
	b.mu.Unlock()
}

// publish sends an event to every watcher; an empty actor means this
// replica decided it.
func (b *eventBus) publish(kind, pool, detail, actor string) {
	if actor == "" {
		actor = b.self
	}
	ev := &pb.Event{Time: timestamppb.New(b.clock.Now()), Kind: kind, Pool: pool, Detail: detail, Actor: actor}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.recent) == maxRecentEvents {
		copy(b.recent, b.recent[1:])
		b.recent = b.recent[:maxRecentEvents-1]
	}
	b.recent = append(b.recent, ev)
	for sub := range b.subs {
		if sub.dropped > 0 {
			select {
			case sub.ch <- &pb.Event{Time: ev.Time, Kind: "dropped", Detail: fmt.Sprintf("%d events dropped: the watcher fell behind", sub.dropped)}:
				sub.dropped = 0
			default:
				sub.dropped++
				continue
			}
		}
		select {
		case sub.ch <- ev:
		default:
			sub.dropped++
		}
	}
}

// diffControl publishes an event per operator change between two states,
// naming the actor who made the latest one.
func (s *Server) diffControl(prev, next *control.State) {
	now := s.opts.Clock.Now()
	actor := next.Actor
	if actor == "" {
		actor = "an operator" // written by a replica that did not record who
	}
	for _, name := range unionKeys(prev.Weights, next.Weights) {
		a, okA := prev.Weights[name]
		b, okB := next.Weights[name]
		if okA != okB || a != b {
			s.events.publish("weight", name, fmt.Sprintf("weight %s -> %s", fmtWeight(a, okA), fmtWeight(b, okB)), actor)
		}
	}
	for _, name := range unionKeys(prev.Drained, next.Drained) {
		if prev.Drained[name] != next.Drained[name] {
			kind := "resume"
			if next.Drained[name] {
				kind = "drain"
			}
			s.events.publish(kind, name, kind+" applied", actor)
		}
	}
	for _, name := range unionKeys(prev.Overrides, next.Overrides) {
		a, okA := prev.Overrides[name]
		b, okB := next.Overrides[name]
		if okA != okB || a != b {
			detail := "capacity override cleared"
			if okB {
				detail = fmt.Sprintf("capacity override: limit %d", b.Limit)
				if !b.Expires.IsZero() {
					detail += fmt.Sprintf(" until %s (in %s)", b.Expires.UTC().Format(time.RFC3339), b.Expires.Sub(now).Round(time.Second))
				}
			}
			s.events.publish("capacity_override", name, detail, actor)
		}
	}
}

func fmtWeight(w float64, set bool) string {
	if !set {
		return "config"
	}
	return fmt.Sprintf("%g", w)
}

func unionKeys[V any](a, b map[string]V) []string {
	seen := map[string]bool{}
	for k := range a {
		seen[k] = true
	}
	for k := range b {
		seen[k] = true
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CountingModeChanged reports a capacity-store mode change (shared <->
// degraded) to event watchers. Must not block; the store calls it.
func (s *Server) CountingModeChanged(from, to capacity.Mode) {
	s.events.publish("counting_mode", "", fmt.Sprintf("capacity counting %s -> %s", from, to), "")
}
