package trace

import (
	"errors"
	"io"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testdata = "../testdata"

// drain reads r to the end (bounded) and returns good requests and bad-line errors.
func drain(t *testing.T, r Reader) ([]Request, []string) {
	t.Helper()
	var reqs []Request
	var bad []string
	for i := 0; i < 10_000_000; i++ {
		req, err := r.Next()
		if errors.Is(err, io.EOF) {
			return reqs, bad
		}
		if err != nil {
			if !IsLineError(err) {
				t.Fatalf("fatal error: %v", err)
			}
			bad = append(bad, err.Error())
			continue
		}
		reqs = append(reqs, req)
	}
	t.Fatal("reader did not end")
	return nil, nil
}

func open(t *testing.T, f Format, name string) *File {
	t.Helper()
	r, err := Open(f, filepath.Join(testdata, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestAzureRealTrace(t *testing.T) {
	reqs, bad := drain(t, open(t, FormatAzure, "AzureLLMInferenceTrace_code.csv"))
	if len(bad) != 0 {
		t.Fatalf("bad lines in the real trace: %v", bad[:min(5, len(bad))])
	}
	if len(reqs) != 8819 {
		t.Fatalf("rows = %d, want 8819", len(reqs))
	}
	first, last := reqs[0], reqs[len(reqs)-1]
	if first.Offset != 0 || first.InputTokens != 4808 || first.OutputTokens != 10 || first.Line != 2 {
		t.Errorf("first = %+v", first)
	}
	// 2023-11-16 18:17:04.0319600 - 18:17:03.9799600 = 52ms exactly (7 fractional digits kept).
	if reqs[1].Offset != 52*time.Millisecond {
		t.Errorf("second offset = %v, want 52ms", reqs[1].Offset)
	}
	if last.InputTokens != 549 || last.OutputTokens != 173 || last.Line != 8820 {
		t.Errorf("last = %+v", last)
	}
	if span := last.Offset; span < 3400*time.Second || span > 3450*time.Second {
		t.Errorf("span = %v, want about 3436s", span)
	}
	var in, maxIn, maxOut int
	for _, r := range reqs {
		in += r.InputTokens
		maxIn = max(maxIn, r.InputTokens)
		maxOut = max(maxOut, r.OutputTokens)
	}
	if mean := in / len(reqs); mean < 2000 || mean > 2100 {
		t.Errorf("mean input = %d, want about 2048", mean)
	}
	if maxIn != 7437 || maxOut != 1899 {
		t.Errorf("max in/out = %d/%d, want 7437/1899", maxIn, maxOut)
	}
}

func TestAzureBadLines(t *testing.T) {
	reqs, bad := drain(t, open(t, FormatAzure, "bad/azure_bad.csv"))
	if len(reqs) != 2 || reqs[1].Offset != 1520040*time.Microsecond {
		t.Errorf("good rows = %+v", reqs)
	}
	want := []string{
		"azure_bad.csv:3: ContextTokens: \"31x0\" is not a whole number",
		"azure_bad.csv:4: 2 field(s), want at least 3",
		"azure_bad.csv:5: ContextTokens: -7 is negative",
		"azure_bad.csv:6: TIMESTAMP: \"yesterday\" is not a time",
		"azure_bad.csv:7: timestamp goes backwards",
	}
	checkBad(t, bad, want)
}

func TestAzureHeaderAndVariants(t *testing.T) {
	if _, err := NewAzure(strings.NewReader("time,ContextTokens\n"), "x.csv"); err == nil ||
		!strings.Contains(err.Error(), "x.csv:1: header lacks column(s) TIMESTAMP, GeneratedTokens") {
		t.Errorf("missing columns: %v", err)
	}
	if _, err := NewAzure(strings.NewReader(""), "empty.csv"); err == nil || !strings.HasPrefix(err.Error(), "empty.csv:1: empty file") {
		t.Errorf("empty: %v", err)
	}
	// 2024 week-long variant: 6 fractional digits and a UTC offset; column order free; BOM.
	in := "\ufeffTIMESTAMP,ContextTokens,GeneratedTokens\n" +
		"2024-05-10 00:00:00.009930+00:00,2162,5\n" +
		"2024-05-10 00:00:00.509930+00:00,37,1\n"
	reqs, bad := drain(t, mustAzure(t, in))
	if len(bad) != 0 || len(reqs) != 2 || reqs[1].Offset != 500*time.Millisecond {
		t.Errorf("2024 variant: %+v %v", reqs, bad)
	}
	reqs, bad = drain(t, mustAzure(t, "GeneratedTokens,TIMESTAMP,ContextTokens\n3,2023-11-16 18:17:03,9\n"))
	if len(bad) != 0 || len(reqs) != 1 || reqs[0].InputTokens != 9 || reqs[0].OutputTokens != 3 {
		t.Errorf("reordered columns: %+v %v", reqs, bad)
	}
}

func mustAzure(t *testing.T, s string) *Azure {
	t.Helper()
	a, err := NewAzure(strings.NewReader(s), "t.csv")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestMooncakeSample(t *testing.T) {
	reqs, bad := drain(t, open(t, FormatMooncake, "mooncake_sample.jsonl"))
	if len(bad) != 0 || len(reqs) != 12 {
		t.Fatalf("reqs=%d bad=%v", len(reqs), bad)
	}
	if r := reqs[5]; r.Offset != 3052*time.Millisecond || r.InputTokens != 6506 || r.OutputTokens != 3 || len(r.HashIDs) != 13 || r.HashIDs[0] != 46 {
		t.Errorf("row 6 = %+v", r)
	}
	if reqs[11].Offset != 9156*time.Millisecond {
		t.Errorf("last offset %v", reqs[11].Offset)
	}
}

func TestMooncakeBadLines(t *testing.T) {
	reqs, bad := drain(t, open(t, FormatMooncake, "bad/mooncake_bad.jsonl"))
	if len(reqs) != 2 || reqs[1].Offset != 30*time.Millisecond || reqs[1].Line != 8 {
		t.Errorf("good = %+v", reqs)
	}
	checkBad(t, bad, []string{
		"mooncake_bad.jsonl:2: input_length: 1.5 is not a whole number",
		"mooncake_bad.jsonl:3: missing input_length",
		"mooncake_bad.jsonl:4: output_length: -2 is negative",
		"mooncake_bad.jsonl:5: not a JSON object",
		"mooncake_bad.jsonl:6: timestamp goes backwards",
	})
}

func TestBurstGPTSample(t *testing.T) {
	f := open(t, FormatBurstGPT, "burstgpt_sample.csv")
	reqs, bad := drain(t, f)
	if len(bad) != 0 || len(reqs) != 8 {
		t.Fatalf("reqs=%d bad=%v", len(reqs), bad)
	}
	if got := f.Reader.(*BurstGPT).Skipped(); got != 2 {
		t.Errorf("skipped failed = %d, want 2", got)
	}
	if r := reqs[1]; r.Offset != 113*time.Second || r.Model != "GPT-4" || r.InputTokens != 417 || r.OutputTokens != 276 || r.Line != 4 {
		t.Errorf("second kept row = %+v", r)
	}
	if reqs[6].Offset != 199500*time.Millisecond {
		t.Errorf("fractional timestamp offset = %v", reqs[6].Offset)
	}
}

func TestBurstGPTBadLines(t *testing.T) {
	f := open(t, FormatBurstGPT, "bad/burstgpt_bad.csv")
	reqs, bad := drain(t, f)
	if len(reqs) != 2 || reqs[1].Offset != 5*time.Second {
		t.Errorf("good = %+v", reqs)
	}
	checkBad(t, bad, []string{
		"burstgpt_bad.csv:3: Timestamp: \"six\" is not a number",
		"burstgpt_bad.csv:4: Request tokens: -1 is negative",
		"burstgpt_bad.csv:5: 2 field(s), want at least 4",
		"burstgpt_bad.csv:7: timestamp goes backwards",
	})
	if _, err := NewBurstGPT(strings.NewReader("Timestamp,Model,Request tokens\n"), "h.csv"); err == nil ||
		!strings.Contains(err.Error(), "h.csv:1: header lacks column(s) Response tokens") {
		t.Errorf("header: %v", err)
	}
}

func checkBad(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("bad lines:\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i := range want {
		// Errors carry the path as given; compare from the base name.
		g := got[i][strings.LastIndex(got[i], "/")+1:]
		if !strings.HasPrefix(g, want[i]) {
			t.Errorf("bad line %d = %q, want prefix %q", i, g, want[i])
		}
	}
}

func TestUnknownFormat(t *testing.T) {
	if _, err := Open("parquet", "x"); err == nil || !strings.Contains(err.Error(), "unknown trace format") {
		t.Errorf("err = %v", err)
	}
}

func TestSyntheticDeterministicAndShaped(t *testing.T) {
	opts := SyntheticOptions{Rate: 50, Duration: 200 * time.Second, CV: 1, Seed: 7,
		Input: LogNormal{Mean: 1000, SD: 500}, Output: LogNormal{Mean: 100, SD: 0}}
	gen := func(o SyntheticOptions) []Request {
		s, err := NewSynthetic(o)
		if err != nil {
			t.Fatal(err)
		}
		r, bad := drain(t, s)
		if len(bad) != 0 {
			t.Fatal(bad)
		}
		return r
	}
	a, b := gen(opts), gen(opts)
	if len(a) != len(b) || a[len(a)/2].Offset != b[len(b)/2].Offset || a[len(a)/2].InputTokens != b[len(b)/2].InputTokens {
		t.Fatal("same seed gave different traces")
	}
	// 10,000 expected arrivals: within 5%.
	if n := len(a); n < 9500 || n > 10500 {
		t.Errorf("poisson count = %d, want about 10000", n)
	}
	var sum float64
	for _, r := range a {
		sum += float64(r.InputTokens)
		if r.OutputTokens != 100 || r.Offset >= opts.Duration {
			t.Fatalf("bad request %+v", r)
		}
	}
	if mean := sum / float64(len(a)); math.Abs(mean-1000) > 50 {
		t.Errorf("input mean = %.0f, want about 1000", mean)
	}
	cv := func(rs []Request) float64 {
		var s, s2 float64
		for i := 1; i < len(rs); i++ {
			g := (rs[i].Offset - rs[i-1].Offset).Seconds()
			s += g
			s2 += g * g
		}
		n := float64(len(rs) - 1)
		m := s / n
		return math.Sqrt(s2/n-m*m) / m
	}
	if c := cv(a); math.Abs(c-1) > 0.1 {
		t.Errorf("poisson gap CV = %.2f, want about 1", c)
	}
	opts.CV = 3
	if c := cv(gen(opts)); c < 2.4 || c > 3.6 {
		t.Errorf("bursty gap CV = %.2f, want about 3", c)
	}
}

func TestParseSynthetic(t *testing.T) {
	o, err := ParseSynthetic("rate=20, cv=2,seed=9,input=512/100,output=64/8", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if o.Rate != 20 || o.CV != 2 || o.Seed != 9 || o.Input != (LogNormal{512, 100}) || o.Output != (LogNormal{64, 8}) || o.Duration != time.Minute {
		t.Errorf("parsed %+v", o)
	}
	for _, bad := range []string{"rate=0", "rate=x", "rate=1,cv=-1", "rate=1,input=5", "rate=1,colour=red", "rate=1,duration=0s", "rate=1e9,duration=1h"} {
		if _, err := ParseSynthetic(bad, time.Minute); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// fixed replays a slice.
type fixed struct {
	reqs []Request
	i    int
}

func (f *fixed) Next() (Request, error) {
	if f.i >= len(f.reqs) {
		return Request{}, io.EOF
	}
	f.i++
	return f.reqs[f.i-1], nil
}

func TestScaled(t *testing.T) {
	src := func() Reader {
		var rs []Request
		for i := 0; i < 100; i++ {
			rs = append(rs, Request{Offset: time.Duration(i) * time.Second, InputTokens: i})
		}
		return &fixed{reqs: rs}
	}
	for _, tc := range []struct {
		f    float64
		want int
	}{{1, 100}, {2, 200}, {0.5, 50}, {1.5, 150}, {0.1, 10}} {
		s, err := NewScaled(src(), tc.f)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := drain(t, s)
		if len(got) != tc.want {
			t.Errorf("scale %v: %d requests, want %d", tc.f, len(got), tc.want)
		}
		for i := 1; i < len(got); i++ {
			if got[i].Offset < got[i-1].Offset {
				t.Fatalf("scale %v: not in order at %d", tc.f, i)
			}
		}
	}
	// Copies spread over the gap to the next request.
	s, _ := NewScaled(src(), 2)
	got, _ := drain(t, s)
	if got[0].Offset != 0 || got[1].Offset != 500*time.Millisecond || got[1].InputTokens != 0 || got[2].Offset != time.Second {
		t.Errorf("copies: %+v %+v %+v", got[0], got[1], got[2])
	}
	if _, err := NewScaled(src(), 0); err == nil {
		t.Error("scale 0 accepted")
	}
}

func TestLimited(t *testing.T) {
	got, _ := drain(t, NewLimited(&fixed{reqs: []Request{{Offset: 0}, {Offset: time.Second}, {Offset: 2 * time.Second}}}, 2*time.Second))
	if len(got) != 2 {
		t.Errorf("limited = %d, want 2", len(got))
	}
}
