package trace

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Mooncake reads the Mooncake trace JSONL (github.com/kvcache-ai/Mooncake,
// traces/*.jsonl): one object per line,
//
//	{"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48]}
//
// timestamp is milliseconds since the start of the trace; hash_ids are the
// prompt's prefix-cache block ids (512 tokens a block). Other keys are
// ignored; blank lines are skipped.
type Mooncake struct {
	name  string
	sc    *bufio.Scanner
	line  int
	order order
}

var _ Reader = (*Mooncake)(nil)

// maxLineBytes bounds one JSONL line (hash_ids lists can be long).
const maxLineBytes = 16 << 20

// NewMooncake returns a reader over r; name is used in errors.
func NewMooncake(r io.Reader, name string) *Mooncake {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLineBytes)
	return &Mooncake{name: name, sc: sc}
}

type mooncakeLine struct {
	Timestamp    *json.Number `json:"timestamp"`
	InputLength  *json.Number `json:"input_length"`
	OutputLength *json.Number `json:"output_length"`
	HashIDs      []int64      `json:"hash_ids"`
}

// Next implements Reader.
func (m *Mooncake) Next() (Request, error) {
	for m.sc.Scan() {
		m.line++
		b := bytes.TrimSpace(m.sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var l mooncakeLine
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&l); err != nil {
			return Request{}, m.errorf("not a JSON object: %v", err)
		}
		if dec.More() {
			return Request{}, m.errorf("more than one JSON value on the line")
		}
		if l.Timestamp == nil {
			return Request{}, m.errorf("missing timestamp")
		}
		ms, err := l.Timestamp.Float64()
		if err != nil || ms < 0 || ms > maxTraceSeconds*1000 {
			return Request{}, m.errorf("timestamp: %s is not a number of milliseconds in [0, %v]", l.Timestamp.String(), float64(maxTraceSeconds*1000))
		}
		in, lerr := m.tokens("input_length", l.InputLength)
		if lerr != nil {
			return Request{}, lerr
		}
		out, lerr := m.tokens("output_length", l.OutputLength)
		if lerr != nil {
			return Request{}, lerr
		}
		off, reason := m.order.accept(time.Duration(ms * float64(time.Millisecond)))
		if reason != "" {
			return Request{}, m.errorf("%s", reason)
		}
		return Request{Offset: off, InputTokens: in, OutputTokens: out, HashIDs: l.HashIDs, Line: m.line}, nil
	}
	if err := m.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Request{}, fmt.Errorf("%s:%d: line longer than %d bytes", m.name, m.line+1, maxLineBytes)
		}
		return Request{}, fmt.Errorf("read %s: %w", m.name, err)
	}
	return Request{}, io.EOF
}

func (m *Mooncake) tokens(key string, n *json.Number) (int, *LineError) {
	if n == nil {
		return 0, m.errorf("missing %s", key)
	}
	v, err := n.Int64()
	if err != nil {
		return 0, m.errorf("%s: %s is not a whole number", key, n.String())
	}
	if v < 0 {
		return 0, m.errorf("%s: %d is negative", key, v)
	}
	if v > maxTokens {
		return 0, m.errorf("%s: %d is larger than %d", key, v, maxTokens)
	}
	return int(v), nil
}

func (m *Mooncake) errorf(format string, args ...any) *LineError {
	return &LineError{File: m.name, Line: m.line, Reason: fmt.Sprintf(format, args...)}
}
