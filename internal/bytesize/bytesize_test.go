package bytesize

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"none", 0}, {"Unlimited", 0}, {"1048576", 1 << 20}, {"512B", 512},
		{"1K", 1024}, {"1k", 1024}, {"1KB", 1024}, {"1KiB", 1024}, {"500M", 500 << 20},
		{"1G", 1 << 30}, {"1.5G", 3 << 29}, {"2T", 2 << 40}, {" 10M ", 10 << 20},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "G", "-1G", "1e9", "1X", "1GG", "+5", "1 000", "99999999999T", "NaN", "1.5.5M"} {
		if n, err := Parse(bad); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %d, %v; want ErrSyntax", bad, n, err)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 1 << 30: "1G", 500 << 20: "500M", 1536: "1536B", 1024: "1K", 3 << 29: "1536M"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q; want %q", n, got, want)
		}
		if n != 0 {
			if back, err := Parse(Format(n)); err != nil || back != n {
				t.Errorf("Parse(Format(%d)) = %d, %v", n, back, err)
			}
		}
	}
}

// Parse never panics, never returns a negative size, and what it accepts
// Format writes back to the same number.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"1G", "1.5G", "0", "none", "512B", "1KiB", "99999999999T", "-1", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("Parse(%q) = %d", s, n)
		}
		if back, err := Parse(Format(n)); err != nil || back != n {
			t.Fatalf("Parse(Format(%d)) = %d, %v", n, back, err)
		}
	})
}
