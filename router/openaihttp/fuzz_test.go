package openaihttp

import (
	"errors"
	"net/http"
	"testing"
)

// FuzzParseRequest: any body and hint header make a request or a clear,
// bounded field error, never a panic, for both endpoints.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range []struct{ body, hint string }{
		{`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}`, "eu"},
		{`{"model":"m","messages":[{"role":"developer","content":[{"type":"text","text":"a"}]},{"role":"assistant","content":null}],"stop":"x","n":1}`, ""},
		{`{"model":"m","prompt":["once"],"max_tokens":16,"temperature":0.5,"top_p":1,"seed":-1,"best_of":1}`, "us-east-1"},
		{`{"model":"m","messages":[{"role":"tool","content":5}],"max_tokens":"x"}`, "\x00"},
		{`{"model":"m","temperature":1e400}`, ""},
		{`[`, ""},
		{``, ""},
	} {
		f.Add([]byte(seed.body), seed.hint)
	}
	f.Fuzz(func(t *testing.T, body []byte, hint string) {
		h := http.Header{}
		h.Set(HeaderCallerRegion, hint)
		h.Set(HeaderPriority, hint)
		h.Set(HeaderTimeout, hint)
		for _, parse := range []func() (*parsed, error){
			func() (*parsed, error) { return parseChat(body, h, func(string) int32 { return 100 }) },
			func() (*parsed, error) { return parseCompletion(body, h) },
		} {
			p, err := parse()
			if err != nil {
				var fe *fieldError
				if !errors.As(err, &fe) {
					t.Fatalf("error %T %v is not a field error", err, err)
				}
				if len(fe.Error()) > 1024 {
					t.Fatalf("error of %d bytes grows with the input", len(fe.Error()))
				}
				if len(fe.param) > 64 {
					t.Fatalf("param %q names no field", fe.param)
				}
				continue
			}
			if p == nil || p.req == nil {
				t.Fatal("no request and no error")
			}
			if p.includeUsage && !p.stream {
				t.Fatal("include_usage without stream")
			}
			if r := p.req.GetRouting(); r != nil && len(r.GetCallerRegion()) > maxHintBytes {
				t.Fatalf("hint of %d bytes", len(r.GetCallerRegion()))
			}
			if p.timeout < 0 || p.timeout > maxTimeout {
				t.Fatalf("timeout %v", p.timeout)
			}
		}
	})
}
