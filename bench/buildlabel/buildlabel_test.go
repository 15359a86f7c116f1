package buildlabel

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestLabel(t *testing.T) {
	tests := []struct {
		settings []debug.BuildSetting
		label    string
		describe string
	}{
		{nil, "pure Go", "go1.26.8, pure Go"},
		{[]debug.BuildSetting{{Key: "-tags", Value: "openssl"}, {Key: "CGO_ENABLED", Value: "1"}},
			"-tags openssl", "go1.26.8, -tags openssl, cgo"},
		{[]debug.BuildSetting{{Key: "-tags", Value: "bench,openssl"}, {Key: "CGO_ENABLED", Value: "0"},
			{Key: "vcs.revision", Value: "2b6ef32aaaaaaaa"}, {Key: "vcs.modified", Value: "true"}},
			"-tags bench,openssl", "go1.26.8, -tags bench,openssl, no cgo, 2b6ef32+modified"},
		{[]debug.BuildSetting{{Key: "-tags", Value: ""}, {Key: "vcs.revision", Value: "abc"}},
			"pure Go", "go1.26.8, pure Go, abc"},
	}
	for _, tt := range tests {
		if got := label(tags(tt.settings)); got != tt.label {
			t.Errorf("label(%v) = %q, want %q", tt.settings, got, tt.label)
		}
		if got := describe("go1.26.8", tt.settings); got != tt.describe {
			t.Errorf("describe(%v) = %q, want %q", tt.settings, got, tt.describe)
		}
	}
}

func TestNotABinary(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Label(p); err == nil {
		t.Error("a shell script got a label")
	}
	// The test binary itself is a Go binary with build information.
	if _, err := Describe(os.Args[0]); err != nil {
		t.Errorf("Describe(test binary): %v", err)
	}
}
