package openaihttp_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRefusedRequestIDIsNeverEchoed: an X-Request-Id the router cannot take
// (spaces, braces, too long) is refused with 400 naming x-request-id, on
// every endpoint that runs a call, and the answer names a new id instead:
// the client's never comes back, neither in a header nor in the body.
func TestRefusedRequestIDIsNeverEchoed(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})
	for _, id := range []string{"has a space", "{tag}", strings.Repeat("x", 129)} {
		for path, body := range map[string]string{
			"/v1/chat/completions": chatBody("2"),
			"/v1/completions":      `{"model":"llama-3.1-8b","prompt":"hi","max_tokens":2}`,
			"/v1/embeddings":       `{"model":"bge-small","input":"hi"}`,
		} {
			req, _ := http.NewRequestWithContext(ctxT(t, 10*time.Second), http.MethodPost, fd.url+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Request-Id", id)
			resp, err := fd.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var eb struct {
				Error struct {
					Param *string `json:"param"`
				} `json:"error"`
			}
			if err := json.Unmarshal(b, &eb); err != nil || resp.StatusCode != 400 || eb.Error.Param == nil || *eb.Error.Param != "x-request-id" {
				t.Errorf("%s, id %.20q: %d %s, want 400 naming x-request-id", path, id, resp.StatusCode, b)
			}
			if got := resp.Header.Get("X-Request-Id"); len(got) != 32 || got == id {
				t.Errorf("%s, id %.20q: answer names %q, want a new id", path, id, got)
			}
			if strings.Contains(string(b), id) {
				t.Errorf("%s: body echoes the refused id: %s", path, b)
			}
		}
	}
}
