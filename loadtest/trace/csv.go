package trace

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
)

// csvTable streams a CSV file with a header row and finds columns by name.
type csvTable struct {
	name string
	r    *csv.Reader
	cols map[string]int // lower-cased header -> index
	need int            // fields a row needs to hold every required column
}

// newCSVTable reads the header and checks that every required column is present.
func newCSVTable(r io.Reader, name string, required []string) (*csvTable, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, &LineError{File: name, Line: 1, Reason: "empty file: want a header row " + strings.Join(required, ",")}
	}
	if err != nil {
		return nil, csvError(name, err)
	}
	t := &csvTable{name: name, r: cr, cols: map[string]int{}}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		t.cols[strings.ToLower(h)] = i
	}
	var missing []string
	for _, c := range required {
		i, ok := t.cols[strings.ToLower(c)]
		if !ok {
			missing = append(missing, c)
			continue
		}
		t.need = max(t.need, i+1)
	}
	if len(missing) > 0 {
		return nil, &LineError{File: name, Line: 1, Reason: fmt.Sprintf("header lacks column(s) %s (have %q)", strings.Join(missing, ", "), strings.Join(header, ","))}
	}
	return t, nil
}

// row is one data row.
type row struct {
	t      *csvTable
	fields []string
	line   int
}

// next reads the next row. A malformed row comes back as a *LineError.
func (t *csvTable) next() (row, error) {
	rec, err := t.r.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return row{}, io.EOF
		}
		return row{}, csvError(t.name, err)
	}
	line, _ := t.r.FieldPos(0)
	if len(rec) < t.need {
		return row{}, &LineError{File: t.name, Line: line, Reason: fmt.Sprintf("%d field(s), want at least %d", len(rec), t.need)}
	}
	return row{t: t, fields: rec, line: line}, nil
}

// get returns the trimmed value of a column known to exist.
func (r row) get(col string) string {
	return strings.TrimSpace(r.fields[r.t.cols[strings.ToLower(col)]])
}

func (r row) errorf(format string, args ...any) *LineError {
	return &LineError{File: r.t.name, Line: r.line, Reason: fmt.Sprintf(format, args...)}
}

// csvError turns an encoding/csv parse error into a *LineError (the csv reader
// recovers and continues on the next record); anything else is fatal.
func csvError(name string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &LineError{File: name, Line: pe.Line, Reason: pe.Err.Error()}
	}
	return fmt.Errorf("read %s: %w", name, err)
}

// parseTokens parses a non-negative token count.
func parseTokens(r row, col string) (int, *LineError) {
	s := r.get(col)
	if s == "" {
		return 0, r.errorf("%s is empty", col)
	}
	n, err := parseInt(s)
	if err != nil {
		return 0, r.errorf("%s: %q is not a whole number", col, s)
	}
	if n < 0 {
		return 0, r.errorf("%s: %d is negative", col, n)
	}
	if n > maxTokens {
		return 0, r.errorf("%s: %d is larger than %d", col, n, maxTokens)
	}
	return int(n), nil
}

// maxTokens bounds token counts so that prompt synthesis stays bounded (16M tokens = 64 MiB of text).
const maxTokens = 1 << 24
