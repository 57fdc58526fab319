// Package trace reads request-arrival traces for the load tester: the Azure
// LLM inference CSV, Mooncake JSONL, BurstGPT CSV, and seeded synthetic
// arrivals. Every reader streams its input line by line, so a trace of any
// length is read in constant memory.
//
// Ordering: readers never sort. A line whose timestamp is earlier than the
// previous accepted line's is reported as a bad line (*LineError) and skipped;
// equal timestamps are fine. Published traces are sorted; a trace that is not
// must be sorted before replay (e.g. `sort -t, -k1,1`), because an open-loop
// replay of an unsorted trace would silently compress its bursts.
//
// Concurrency: a Reader is used by one goroutine at a time.
package trace

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
)

// Request is one arrival in a trace.
type Request struct {
	// Offset is the arrival time since the trace's first arrival (trace clock).
	Offset time.Duration
	// InputTokens is the prompt length in tokens (>= 0).
	InputTokens int
	// OutputTokens is the completion length in tokens (>= 0).
	OutputTokens int
	// Model is the model the trace names, when it names one (BurstGPT); informational.
	Model string
	// HashIDs are Mooncake's prefix-cache block ids; requests sharing ids share a prompt prefix.
	HashIDs []int64
	// Line is the 1-based source line (0 for synthetic requests).
	Line int
}

// Reader yields trace requests in arrival order.
//
// Next returns the next request; io.EOF at the end; a *LineError for a bad
// line, after which the reader is positioned on the following line and Next
// may be called again; any other error is fatal (I/O).
type Reader interface {
	Next() (Request, error)
}

// LineError is one bad line, formatted "FILE:LINE: reason".
type LineError struct {
	File   string
	Line   int
	Reason string
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

// IsLineError reports whether err is (or wraps) a *LineError.
func IsLineError(err error) bool {
	var le *LineError
	return errors.As(err, &le)
}

// Format names a trace format.
type Format string

// Known formats.
const (
	FormatAzure     Format = "azure"
	FormatMooncake  Format = "mooncake"
	FormatBurstGPT  Format = "burstgpt"
	FormatSynthetic Format = "synthetic"
)

// fileFormats are the formats read from a file, registered explicitly by name.
var fileFormats = map[Format]func(r io.Reader, name string) (Reader, error){
	FormatAzure:    func(r io.Reader, name string) (Reader, error) { return NewAzure(r, name) },
	FormatMooncake: func(r io.Reader, name string) (Reader, error) { return NewMooncake(r, name), nil },
	FormatBurstGPT: func(r io.Reader, name string) (Reader, error) { return NewBurstGPT(r, name) },
}

// Formats lists every format name, sorted.
func Formats() []string {
	names := []string{string(FormatSynthetic)}
	for f := range fileFormats {
		names = append(names, string(f))
	}
	sort.Strings(names)
	return names
}

// New builds a reader of a file format over r; name is used in errors.
func New(format Format, r io.Reader, name string) (Reader, error) {
	mk, ok := fileFormats[format]
	if !ok {
		return nil, fmt.Errorf("unknown trace format %q (known: %v)", format, Formats())
	}
	return mk(r, name)
}

// File is a reader over an open trace file; Close closes the file.
type File struct {
	Reader
	f *os.File
}

// Close closes the underlying file.
func (f *File) Close() error { return f.f.Close() }

// Open opens path and returns a reader of the given file format.
func Open(format Format, path string) (*File, error) {
	if _, ok := fileFormats[format]; !ok {
		return nil, fmt.Errorf("unknown trace format %q (known: %v)", format, Formats())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open trace: %w", err)
	}
	r, err := New(format, f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &File{Reader: r, f: f}, nil
}

// order tracks the previous accepted timestamp for the ordering rule.
type order struct {
	started bool
	first   time.Duration // absolute time of the first accepted request
	prev    time.Duration
}

// accept checks t (absolute) against the previous one and returns the offset from the first.
func (o *order) accept(t time.Duration) (time.Duration, string) {
	if o.started && t < o.prev {
		return 0, fmt.Sprintf("timestamp goes backwards (%v earlier than the previous accepted line): sort the trace by time", o.prev-t)
	}
	if !o.started {
		o.started = true
		o.first = t
	}
	o.prev = t
	return t - o.first, ""
}
