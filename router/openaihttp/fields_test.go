package openaihttp_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// docRow is one row of a field table in docs/http.md.
type docRow struct {
	field, example, answer string
	endpoints              []string
}

// docFields reads the table under heading in docs/http.md: field (first
// backticked name, or "anything else"), endpoints, example JSON members,
// answer (200 or 400).
func docFields(t *testing.T, heading string) []docRow {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "http.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/http.md has no %q", heading)
	}
	var rows []docRow
	inTable := false
	for line := range strings.SplitSeq(rest, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) < 5 || strings.HasPrefix(cells[0], "-") || strings.TrimSpace(cells[0]) == "field" {
			continue
		}
		r := docRow{example: strings.Trim(strings.TrimSpace(cells[2]), "`"), answer: strings.TrimSpace(cells[3])}
		name := strings.TrimSpace(cells[0])
		if i := strings.Index(name, "`"); i >= 0 {
			name = name[i+1:]
			name = name[:strings.Index(name, "`")]
		} else {
			// "anything else": the example's field.
			name = strings.Trim(strings.SplitN(strings.Trim(strings.TrimSpace(cells[2]), "`"), ":", 2)[0], `"`)
		}
		r.field = name
		for _, e := range strings.Split(cells[1], ",") {
			r.endpoints = append(r.endpoints, strings.TrimSpace(e))
		}
		rows = append(rows, r)
	}
	if len(rows) < 5 {
		t.Fatalf("docs/http.md %q: only %d rows read", heading, len(rows))
	}
	return rows
}

// Every request field docs/http.md lists is sent, on every endpoint it
// names, to a router in front of a real llama-server: a field documented as
// served gets 200, one documented as refused gets 400 naming it.
func TestEveryDocumentedFieldIsServedOrRefused(t *testing.T) {
	srv := startLlamaChat(t)
	emb := startLlamaEmbed(t)
	fd := startFrontDoor(t, doorOpts{fleetYAML: llamaFleet(srv, emb)})
	bases := map[string]struct{ path, body string }{
		"chat":        {"/v1/chat/completions", `"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3`},
		"completions": {"/v1/completions", `"model": "tiny", "prompt": "hi", "max_tokens": 3`},
		"embeddings":  {"/v1/embeddings", `"model": "tiny-embed", "input": "hi"`},
	}
	seen := map[string]bool{}
	for _, row := range append(docFields(t, "### Request fields"), docFields(t, "### Embeddings fields")...) {
		for _, ep := range row.endpoints {
			base, ok := bases[ep]
			if !ok {
				t.Fatalf("row %s: unknown endpoint %q", row.field, ep)
			}
			body := "{" + base.body + ", " + row.example + "}"
			if !json.Valid([]byte(body)) {
				t.Fatalf("row %s: example is not JSON: %s", row.field, body)
			}
			req, _ := http.NewRequestWithContext(ctxT(t, 30*time.Second), http.MethodPost, fd.url+base.path, bytes.NewReader([]byte(body)))
			req.Header.Set("Content-Type", "application/json")
			resp, err := fd.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got := resp.Status[:3]
			if got != row.answer {
				t.Errorf("%s %s: %s %s, docs say %s", ep, row.field, got, out, row.answer)
				continue
			}
			if row.answer == "400" {
				var e struct {
					Error struct {
						Param string `json:"param"`
					} `json:"error"`
				}
				if json.Unmarshal(out, &e) != nil || e.Error.Param != row.field {
					t.Errorf("%s %s: 400 %s does not name the field", ep, row.field, out)
				}
			}
			seen[row.field] = true
		}
	}
	for _, f := range []string{"tools", "tool_choice", "response_format", "logprobs", "top_logprobs", "seed", "stop", "some_future_field", "input", "encoding_format", "truncate"} {
		if !seen[f] {
			t.Errorf("docs/http.md does not list %s", f)
		}
	}
}
