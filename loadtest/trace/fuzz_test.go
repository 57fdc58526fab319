package trace

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// FuzzFileReaders: every file format's reader over any bytes yields
// requests, *LineErrors and io.EOF, never a panic; requests come in
// non-decreasing offset order with non-negative token counts, and every bad
// line names its file. Bounded: at most 10,000 Next calls per input.
// Seeds: testdata/fuzz/FuzzFileReaders (samples of each format, bad lines).
func FuzzFileReaders(f *testing.F) {
	f.Add(uint8(0), []byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n"))
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		formats := []Format{FormatAzure, FormatMooncake, FormatBurstGPT}
		format := formats[int(which)%len(formats)]
		r, err := New(format, bytes.NewReader(data), "fuzz")
		if err != nil {
			return // a header the format does not accept
		}
		last := time.Duration(-1)
		for i := 0; i < 10000; i++ {
			req, err := r.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			var le *LineError
			if errors.As(err, &le) {
				if le.File != "fuzz" || le.Line <= 0 {
					t.Fatalf("%s: line error %+v does not name the file and a line", format, le)
				}
				continue
			}
			if err != nil {
				return // a fatal read error ends the trace
			}
			if req.Offset < 0 || req.Offset < last || req.InputTokens < 0 || req.OutputTokens < 0 {
				t.Fatalf("%s: request %+v after offset %s", format, req, last)
			}
			last = req.Offset
		}
	})
}

// FuzzSyntheticSpec: any --synthetic spec parses or errors; a parsed one
// builds a generator whose first 1,000 arrivals are ordered and non-negative.
// Seeds: testdata/fuzz/FuzzSyntheticSpec.
func FuzzSyntheticSpec(f *testing.F) {
	f.Add("rate=5,duration=10s")
	f.Fuzz(func(t *testing.T, spec string) {
		opts, err := ParseSynthetic(spec, time.Minute)
		if err != nil {
			return
		}
		s, err := NewSynthetic(opts)
		if err != nil {
			return
		}
		last := time.Duration(0)
		for i := 0; i < 1000; i++ {
			req, err := s.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				t.Fatalf("synthetic %q: %v", spec, err)
			}
			if req.Offset < last || req.InputTokens < 0 || req.OutputTokens < 0 {
				t.Fatalf("synthetic %q: request %+v after %s", spec, req, last)
			}
			last = req.Offset
		}
	})
}
