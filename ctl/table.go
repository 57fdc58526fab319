package ctl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// table writes aligned columns with text/tabwriter.
type table struct {
	tw   *tabwriter.Writer
	cols int
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0), cols: len(header)}
	fmt.Fprintln(t.tw, strings.Join(header, "\t"))
	return t
}

// row writes one row; values are formatted with %v, tabs and newlines in them
// replaced so they cannot break the layout.
func (t *table) row(vals ...any) {
	cells := make([]string, len(vals))
	for i, v := range vals {
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(fmt.Sprint(v))
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
