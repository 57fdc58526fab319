package hostname

import "testing"

func TestNormal(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM.": "example.com", "localhost": "localhost", "127.0.0.1": "127.0.0.1",
		"::ffff:127.0.0.1": "127.0.0.1", "0:0:0:0:0:0:0:1": "::1", "": "",
	} {
		if got := Normal(in); got != want {
			t.Errorf("Normal(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for in, want := range map[string]bool{
		"LOCALHOST.": true, "127.0.0.1": true, "::ffff:127.0.0.1": true, "0:0:0:0:0:0:0:1": true,
		"127.0.0.2": false, "evil.example": false, "localhost.evil.example": false, "": false,
	} {
		if got := IsLoopback(in); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestThisMachineOnly(t *testing.T) {
	for in, want := range map[string]bool{
		"localhost": true, "LOCALHOST.": true, "127.0.0.1": true, "127.9.9.9": true, "::1": true, "[::1]": true,
		"::ffff:127.0.0.1": true, "[::ffff:127.0.0.2]": true,
		"0.0.0.0": false, "::": false, "[::]": false, "": false, "10.0.0.7": false, "2001:db8::1": false,
		"localhost.evil.example": false, "evil.localhost": false, "example.com": false,
	} {
		if got := ThisMachineOnly(in); got != want {
			t.Errorf("ThisMachineOnly(%q) = %v, want %v", in, got, want)
		}
	}
}
