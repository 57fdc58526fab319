package anthropichttp_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRequestIDAndBearerKey: a tenant's key is taken from Authorization:
// Bearer as from x-api-key; the client's X-Request-Id names the message and
// comes back in Request-Id and X-Request-Id; one the router cannot take is
// refused with 400 naming x-request-id, and neither the headers nor the
// error body's request_id echo it.
func TestRequestIDAndBearerKey(t *testing.T) {
	const key = "sk-tenant-acme"
	d := startDoor(t, string(demoWithTenant(key)), 0)
	post := func(id, authorization string) (*http.Response, []byte) {
		req, _ := http.NewRequestWithContext(ctxT(t, 10*time.Second), http.MethodPost, d.url+"/v1/messages",
			strings.NewReader(`{"model":"llama-3.1-8b","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Anthropic-Version", "2023-06-01")
		req.Header.Set("Authorization", authorization)
		if id != "" {
			req.Header.Set("X-Request-Id", id)
		}
		resp, err := d.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, b
	}
	if resp, b := post("", "Bearer sk-wrong"); resp.StatusCode != 401 || !strings.Contains(string(b), `"authentication_error"`) {
		t.Fatalf("wrong bearer key: %d %s", resp.StatusCode, b)
	}
	resp, b := post("client-id-9", "Bearer "+key)
	var msg struct{ ID string }
	if err := json.Unmarshal(b, &msg); err != nil || resp.StatusCode != 200 || msg.ID != "msg_client-id-9" ||
		resp.Header.Get("Request-Id") != "client-id-9" || resp.Header.Get("X-Request-Id") != "client-id-9" {
		t.Fatalf("bearer key with a request id: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	for _, id := range []string{"has a space", "{tag}", strings.Repeat("x", 129)} {
		resp, b := post(id, "Bearer "+key)
		var eb struct {
			Type  string
			Error struct{ Type, Message string }
			// RequestID names the answer.
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(b, &eb); err != nil || resp.StatusCode != 400 || eb.Error.Type != "invalid_request_error" || !strings.HasPrefix(eb.Error.Message, "x-request-id: ") {
			t.Errorf("id %.20q: %d %s, want 400 naming x-request-id", id, resp.StatusCode, b)
		}
		if strings.Contains(string(b), id) || resp.Header.Get("X-Request-Id") == id || resp.Header.Get("Request-Id") == id || len(eb.RequestID) != 32 {
			t.Errorf("id %.20q echoed or no new id: %v %s", id, resp.Header, b)
		}
	}
}
