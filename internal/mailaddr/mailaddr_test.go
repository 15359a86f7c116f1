package mailaddr

import (
	"fmt"
	"strings"
	"testing"
)

func TestValidDomain(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"example.org", true},
		{"Mail.Example.ORG", true},
		{"123.example.org", true}, // RFC 1123: a label may start with a digit
		{"xn--bcher-kva.example", true},
		{"a-b.example", true},
		{"localhost", false}, // one label
		{"example.123", false},
		{"-a.example", false},
		{"a-.example", false},
		{"a..example", false},
		{"example.org.", false}, // callers drop the final dot first
		{"exa mple.org", false},
		{"bücher.example", false}, // IDNs are written as xn--
		{strings.Repeat("a", 64) + ".example", false},
		{strings.Repeat("a.", 126) + "org", false}, // 255 characters
		{"", false},
	}
	for _, tt := range tests {
		if got := ValidDomain(tt.in); got != tt.want {
			t.Errorf("ValidDomain(%q) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

func TestValidAddress(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"user@example.org", true},
		{"first.last+tag@example.org", true},
		{"o'brien@example.org", true},
		{"a@b@example.org", false}, // the local part holds an @
		{"@example.org", false},
		{"user@", false},
		{"user", false},
		{".user@example.org", false},
		{"user.@example.org", false},
		{"us..er@example.org", false},
		{`"quoted"@example.org`, false}, // no quoted local parts
		{"us er@example.org", false},
		{"user@localhost", false},
		{strings.Repeat("a", 65) + "@example.org", false},
	}
	for _, tt := range tests {
		if got := ValidAddress(tt.in); got != tt.want {
			t.Errorf("ValidAddress(%q) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

func ExampleValidAddress() {
	for _, a := range []string{"info@exemple.fr", "info@exemple", "in..fo@exemple.fr"} {
		fmt.Println(a, ValidAddress(a))
	}
	// Output:
	// info@exemple.fr true
	// info@exemple false
	// in..fo@exemple.fr false
}
