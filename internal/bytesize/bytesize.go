// Package bytesize reads and writes storage sizes as administrators type
// them ("500M", "1G", "1.5G", "0"), in binary units as Dovecot's quota rules
// count them (1K = 1024 bytes).
package bytesize

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

var units = []struct {
	suffix string
	mult   int64
}{
	{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1},
}

// ErrSyntax is wrapped by every Parse error.
var ErrSyntax = errors.New("not a size")

// Parse reads a size: a number of bytes ("1048576"), or a number with one of
// the suffixes B, K, M, G, T (binary units; "KB", "KiB", "k" are accepted
// too), e.g. "500M" or "1.5G". "0", "none" and "unlimited" are 0, which the
// quota rules read as no limit.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	switch strings.ToLower(t) {
	case "":
		return 0, fmt.Errorf("bytesize: empty size: %w (write e.g. 500M or 1G)", ErrSyntax)
	case "none", "unlimited":
		return 0, nil
	}
	up := strings.ToUpper(t)
	// "KiB" and "KB" are "K".
	if n := len(up); n > 2 && strings.HasSuffix(up, "IB") && strings.ContainsRune("KMGT", rune(up[n-3])) {
		up = up[:n-2]
	} else if n > 1 && up[n-1] == 'B' && strings.ContainsRune("KMGT", rune(up[n-2])) {
		up = up[:n-1]
	}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(up, u.suffix) {
			mult, up = u.mult, strings.TrimSpace(strings.TrimSuffix(up, u.suffix))
			break
		}
	}
	if up == "" || strings.ContainsAny(up, "+-eE") {
		return 0, fmt.Errorf("bytesize: %q: %w (write e.g. 500M, 1G or a number of bytes)", s, ErrSyntax)
	}
	if n, err := strconv.ParseInt(up, 10, 64); err == nil {
		if n > math.MaxInt64/mult {
			return 0, fmt.Errorf("bytesize: %q is too large: %w", s, ErrSyntax)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(up, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("bytesize: %q: %w (write e.g. 500M, 1G or a number of bytes)", s, ErrSyntax)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("bytesize: %q is too large: %w", s, ErrSyntax)
	}
	return int64(math.Round(v)), nil
}

// Format writes n with the largest unit that divides it exactly ("1G",
// "500M", "1536B"); 0 is "0".
func Format(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range units {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}
