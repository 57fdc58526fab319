package trace

import (
	"io"
	"math"
	"strconv"
	"time"
)

// BurstGPT reads the BurstGPT CSV (github.com/HPMLL/BurstGPT): columns
// Timestamp (seconds since the start of the trace, a float), Model
// (e.g. ChatGPT, GPT-4), Request tokens, Response tokens, Total tokens,
// Log Type (Conversation log, API log). Columns are found by name; Total
// tokens and Log Type are not needed.
//
// Rows with Response tokens 0 are requests that failed in the original
// service (the dataset's convention); they are skipped, not replayed, and
// counted by Skipped.
type BurstGPT struct {
	t       *csvTable
	order   order
	skipped int
}

var _ Reader = (*BurstGPT)(nil)

// BurstGPT column names.
const (
	burstTimestamp = "Timestamp"
	burstModel     = "Model"
	burstRequest   = "Request tokens"
	burstResponse  = "Response tokens"
)

// NewBurstGPT reads the header of a BurstGPT trace; name is used in errors.
func NewBurstGPT(r io.Reader, name string) (*BurstGPT, error) {
	t, err := newCSVTable(r, name, []string{burstTimestamp, burstModel, burstRequest, burstResponse})
	if err != nil {
		return nil, err
	}
	return &BurstGPT{t: t}, nil
}

// Skipped is how many rows were skipped as failed in the original trace (Response tokens 0).
func (b *BurstGPT) Skipped() int { return b.skipped }

// Next implements Reader.
func (b *BurstGPT) Next() (Request, error) {
	for {
		r, err := b.t.next()
		if err != nil {
			return Request{}, err
		}
		ts := r.get(burstTimestamp)
		sec, err := strconv.ParseFloat(ts, 64)
		if err != nil || math.IsNaN(sec) || math.IsInf(sec, 0) {
			return Request{}, r.errorf("Timestamp: %q is not a number of seconds", ts)
		}
		if sec < 0 || sec > maxTraceSeconds {
			return Request{}, r.errorf("Timestamp: %v is out of range [0, %v] s", sec, float64(maxTraceSeconds))
		}
		in, lerr := parseTokens(r, burstRequest)
		if lerr != nil {
			return Request{}, lerr
		}
		out, lerr := parseTokens(r, burstResponse)
		if lerr != nil {
			return Request{}, lerr
		}
		off, reason := b.order.accept(time.Duration(sec * float64(time.Second)))
		if reason != "" {
			return Request{}, r.errorf("%s", reason)
		}
		if out == 0 {
			b.skipped++
			continue
		}
		return Request{Offset: off, InputTokens: in, OutputTokens: out, Model: r.get(burstModel), Line: r.line}, nil
	}
}

// maxTraceSeconds bounds timestamps in seconds (about 30 years) so that durations never overflow.
const maxTraceSeconds = 1e9
