package backends

import (
	"strings"
	"testing"
)

// FuzzParseLoad: a backend's load header (client-controlled from the
// router's point of view) parses or errors, never panics; what parses has no
// negative count and survives a FormatLoad round trip; an error quotes at most
// 64 bytes of the header per part, whatever its length (the fuzzer found
// errors that quoted the whole header twice: seed 3b2042281a130504).
// Seeds: testdata/fuzz/FuzzParseLoad.
func FuzzParseLoad(f *testing.F) {
	f.Add("running=3;queued=1;capacity=8")
	f.Fuzz(func(t *testing.T, v string) {
		l, err := ParseLoad(v)
		if err != nil {
			if len(err.Error()) > 1024 {
				t.Fatalf("error of %d bytes for a %d-byte header", len(err.Error()), len(v))
			}
			return
		}
		if l.Running < 0 || l.Queued < 0 || l.Capacity < 0 {
			t.Fatalf("negative counts from %q: %+v", v, l)
		}
		back, err := ParseLoad(FormatLoad(l))
		if err != nil || back.Running != l.Running || back.Queued != l.Queued || back.Capacity != l.Capacity {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", v, l, FormatLoad(l), back, err)
		}
		if strings.Count(v, ";") > 0 && FormatLoad(l) == "" {
			t.Fatal("empty format")
		}
	})
}
