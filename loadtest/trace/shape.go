package trace

import (
	"fmt"
	"io"
	"math"
	"time"
)

// Scaled changes how many requests a trace has while keeping its shape.
// With factor f every source request yields, on average, f requests: an
// accumulator adds f per request and emits its whole part (f = 2 replicates
// every request, f = 0.5 keeps every other one, f = 1.5 alternates one and
// two). Copies of a request are spread evenly over the gap to the next source
// request, so a replicated trace has the same arrival curve at twice the
// height rather than synchronised pairs. It is deterministic.
//
// Errors from the source (bad lines included) pass through unchanged.
type Scaled struct {
	src     Reader
	factor  int64 // requests per source request, in millionths
	acc     int64
	cur     Request // request being replicated
	copies  int     // copies of cur still to emit
	emitted int     // copies of cur emitted
	total   int     // copies of cur in all
	next    *Request
	nextErr error
}

var _ Reader = (*Scaled)(nil)

// scaleUnit is the fixed-point unit of the scale factor (exact for factors with up to 6 decimals).
const scaleUnit = 1_000_000

// NewScaled wraps src; factor must be in (0, 100].
func NewScaled(src Reader, factor float64) (*Scaled, error) {
	if !(factor > 0) || factor > 100 || math.IsInf(factor, 0) {
		return nil, fmt.Errorf("scale must be in (0, 100], got %v", factor)
	}
	return &Scaled{src: src, factor: int64(math.Round(factor * scaleUnit))}, nil
}

// Next implements Reader.
func (s *Scaled) Next() (Request, error) {
	for s.copies == 0 {
		r, err := s.pull()
		if err != nil {
			return Request{}, err
		}
		s.acc += s.factor
		n := int(s.acc / scaleUnit)
		s.acc %= scaleUnit
		if n == 0 {
			continue
		}
		s.cur, s.copies, s.emitted, s.total = r, n, 0, n
	}
	r := s.cur
	if s.emitted > 0 {
		gap := time.Duration(0)
		if nx := s.peek(); nx != nil && nx.Offset > r.Offset {
			gap = nx.Offset - r.Offset
		}
		r.Offset += gap * time.Duration(s.emitted) / time.Duration(s.total)
	}
	s.emitted++
	s.copies--
	return r, nil
}

// pull returns the next good source request (a peeked one first).
func (s *Scaled) pull() (Request, error) {
	if s.next != nil {
		r := *s.next
		s.next = nil
		return r, nil
	}
	if s.nextErr != nil {
		err := s.nextErr
		s.nextErr = nil
		return Request{}, err
	}
	return s.src.Next()
}

// peek looks one good request ahead; on an error it returns nil and keeps the error for pull.
func (s *Scaled) peek() *Request {
	if s.next != nil {
		return s.next
	}
	if s.nextErr != nil {
		return nil
	}
	r, err := s.src.Next()
	if err != nil {
		s.nextErr = err
		return nil
	}
	s.next = &r
	return s.next
}

// Limited ends a trace at a trace-clock offset: requests at or after Limit are not returned.
type Limited struct {
	src   Reader
	limit time.Duration
	done  bool
}

var _ Reader = (*Limited)(nil)

// NewLimited wraps src; limit <= 0 means no limit.
func NewLimited(src Reader, limit time.Duration) *Limited { return &Limited{src: src, limit: limit} }

// Next implements Reader.
func (l *Limited) Next() (Request, error) {
	if l.done {
		return Request{}, io.EOF
	}
	r, err := l.src.Next()
	if err != nil {
		return r, err
	}
	if l.limit > 0 && r.Offset >= l.limit {
		l.done = true
		return Request{}, io.EOF
	}
	return r, nil
}
