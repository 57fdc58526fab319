package trace

import (
	"io"
	"strconv"
	"strings"
	"time"
)

// Azure reads the Azure LLM inference trace CSV published in the Azure Public
// Dataset (2023: AzureLLMInferenceTrace_code.csv / _conv.csv; 2024: the
// week-long _1week.csv files). Columns, found by name in the header:
// TIMESTAMP ("2023-11-16 18:17:03.9799600": date, time, 0–9 fractional
// digits, optionally a UTC offset such as "+00:00"), ContextTokens,
// GeneratedTokens. Other columns are ignored.
type Azure struct {
	t     *csvTable
	order order
}

var _ Reader = (*Azure)(nil)

// Azure column names.
const (
	azureTimestamp = "TIMESTAMP"
	azureContext   = "ContextTokens"
	azureGenerated = "GeneratedTokens"
)

// NewAzure reads the header of an Azure trace; name is used in errors.
func NewAzure(r io.Reader, name string) (*Azure, error) {
	t, err := newCSVTable(r, name, []string{azureTimestamp, azureContext, azureGenerated})
	if err != nil {
		return nil, err
	}
	return &Azure{t: t}, nil
}

// Next implements Reader.
func (a *Azure) Next() (Request, error) {
	r, err := a.t.next()
	if err != nil {
		return Request{}, err
	}
	ts := r.get(azureTimestamp)
	at, ok := parseAzureTime(ts)
	if !ok {
		return Request{}, r.errorf("TIMESTAMP: %q is not a time like 2023-11-16 18:17:03.9799600", ts)
	}
	if y := at.Year(); y < azureMinYear || y > azureMaxYear {
		// Outside these years the absolute time in ns (UnixNano) or the
		// offset between two lines would overflow a Duration.
		return Request{}, r.errorf("TIMESTAMP: %q is outside the years %d to %d", ts, azureMinYear, azureMaxYear)
	}
	in, lerr := parseTokens(r, azureContext)
	if lerr != nil {
		return Request{}, lerr
	}
	out, lerr := parseTokens(r, azureGenerated)
	if lerr != nil {
		return Request{}, lerr
	}
	off, reason := a.order.accept(time.Duration(at.UnixNano()))
	if reason != "" {
		return Request{}, r.errorf("%s", reason)
	}
	return Request{Offset: off, InputTokens: in, OutputTokens: out, Line: r.line}, nil
}

// azureLayouts: Go accepts any number of fractional-second digits after the
// seconds field when parsing, so one layout covers 7 digits (2023) and 6 (2024).
var azureLayouts = []string{
	"2006-01-02 15:04:05",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02T15:04:05",
	"2006-01-02T15:04:05Z07:00",
}

// The years an Azure trace timestamp may fall in: 230 years apart at most,
// so any two lines' offset fits a Duration (292 years).
const azureMinYear, azureMaxYear = 1970, 2200

func parseAzureTime(s string) (time.Time, bool) {
	for _, l := range azureLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

func parseInt(s string) (int64, error) {
	return strconv.ParseInt(strings.TrimSpace(s), 10, 64)
}
