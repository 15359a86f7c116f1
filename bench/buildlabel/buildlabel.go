// Package buildlabel names a Go binary by how it was built, from the build
// information the go command writes into every binary (`go version -m`),
// so that a benchmark labels each build exactly as built and not as its
// script meant to build it (GOFLAGS from the environment adds build tags
// silently).
package buildlabel

import (
	"debug/buildinfo"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
)

// Tags returns the build tags the binary at path was built with.
func Tags(path string) ([]string, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("buildlabel: %s: %w (not a Go binary built with module support?)", path, err)
	}
	return tags(bi.Settings), nil
}

func tags(settings []debug.BuildSetting) []string {
	for _, s := range settings {
		if s.Key == "-tags" && s.Value != "" {
			return strings.Split(s.Value, ",")
		}
	}
	return nil
}

// Label names the build: "pure Go" when it has no build tags, else
// "-tags a,b".
func Label(path string) (string, error) {
	t, err := Tags(path)
	if err != nil {
		return "", err
	}
	return label(t), nil
}

func label(t []string) string {
	if len(t) == 0 {
		return "pure Go"
	}
	return "-tags " + strings.Join(t, ",")
}

// Has reports whether the binary at path was built with tag.
func Has(path, tag string) (bool, error) {
	t, err := Tags(path)
	if err != nil {
		return false, err
	}
	return slices.Contains(t, tag), nil
}

// Describe is one line about the build: Go version, label, CGO_ENABLED and
// the source revision (with "+modified" for a dirty tree), e.g.
// "go1.26.8, -tags openssl, cgo, 2b6ef32+modified".
func Describe(path string) (string, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("buildlabel: %s: %w", path, err)
	}
	return describe(bi.GoVersion, bi.Settings), nil
}

func describe(goVersion string, settings []debug.BuildSetting) string {
	parts := []string{goVersion, label(tags(settings))}
	var rev, cgo, modified string
	for _, s := range settings {
		switch s.Key {
		case "CGO_ENABLED":
			cgo = s.Value
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if cgo == "1" {
		parts = append(parts, "cgo")
	} else if cgo == "0" {
		parts = append(parts, "no cgo")
	}
	if rev != "" {
		if len(rev) > 7 {
			rev = rev[:7]
		}
		if modified == "true" {
			rev += "+modified"
		}
		parts = append(parts, rev)
	}
	return strings.Join(parts, ", ")
}
