package edgehttp

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReadHints(t *testing.T) {
	h := http.Header{}
	h.Set(HeaderCallerRegion, " US-East-1 ")
	h.Set(HeaderResidency, "EU")
	h.Set(HeaderPriority, "Batch")
	h.Set(HeaderRequestID, "abc")
	h.Set(HeaderTimeout, "1500ms")
	got, err := ReadHints(h)
	if err != nil {
		t.Fatal(err)
	}
	if got.Routing.GetCallerRegion() != "us-east-1" || got.Routing.GetResidency() != "eu" || got.Priority != pb.Priority_PRIORITY_BATCH || got.RequestID != "abc" || got.Timeout != 1500*time.Millisecond {
		t.Fatalf("%+v", got)
	}
	if got, _ := ReadHints(http.Header{}); got.Routing != nil || got.Priority != 0 {
		t.Fatalf("no headers: %+v", got)
	}
	for header, value := range map[string]string{
		HeaderPriority:     "urgent",
		HeaderTimeout:      "11m",
		HeaderCallerRegion: strings.Repeat("x", MaxHintBytes+1),
	} {
		h := http.Header{}
		h.Set(header, value)
		_, err := ReadHints(h)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != strings.ToLower(header) {
			t.Errorf("%s: %q: %v, want a field error naming it", header, value, err)
		}
	}
}

func TestReadBodyAndCredentials(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := Caller(r.Header); got.APIKey != "k" {
			http.Error(w, "no key", http.StatusTeapot)
			return
		}
		if _, err := ReadBody(w, r, 8, time.Second); err != nil {
			if errors.Is(err, ErrTooLarge) {
				w.WriteHeader(http.StatusRequestEntityTooLarge)
				return
			}
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	for body, want := range map[string]int{"small": 200, "far too large a body": 413} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		req.Header.Set("X-Api-Key", "k")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%q: %d, want %d", body, resp.StatusCode, want)
		}
	}
	if q := Quote(strings.Repeat("a", 1000)); len(q) > 100 || !strings.Contains(q, "1000 bytes") {
		t.Fatalf("quote %q", q)
	}
	if call, answer := RequestID("a b"); call != "a b" || answer == "a b" || len(answer) != 32 {
		t.Fatal("a refused id is carried by the call and never echoed")
	}
	if call, answer := RequestID(" abc "); call != "abc" || answer != "abc" {
		t.Fatal("a plain id is both")
	}
	if call, answer := RequestID(""); len(call) != 32 || answer != call {
		t.Fatal("a new id is both")
	}
}

// TestCaller: the credential comes from X-Api-Key, else from the token of
// "Authorization: Bearer"; an Authorization in another form presents none.
func TestCaller(t *testing.T) {
	for _, c := range []struct {
		apiKey, authorization, want string
	}{
		{"", "", ""},
		{"sk-a", "", "sk-a"},
		{"", "Bearer sk-b", "sk-b"},
		{"sk-a", "Bearer sk-b", "sk-a"},
		{"", "Basic dXNlcjpwYXNz", ""},
		{"", "bearer sk-b", ""},
		{"", "Bearer ", ""},
	} {
		h := http.Header{}
		if c.apiKey != "" {
			h.Set("X-Api-Key", c.apiKey)
		}
		if c.authorization != "" {
			h.Set("Authorization", c.authorization)
		}
		if got := Caller(h).APIKey; got != c.want {
			t.Errorf("x-api-key %q, authorization %q: key %q, want %q", c.apiKey, c.authorization, got, c.want)
		}
	}
}
