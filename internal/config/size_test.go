package config

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// A file over MaxSize is refused before it is decoded, with little memory:
// a 100 MB postkit.yaml used to take 16 s and 685 MB to be read.
func TestLoadRefusesLargeFile(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	// A valid start, then 100 MB of nothing (sparse: costs no disk).
	f.WriteString(minimal)
	if err := f.Truncate(100 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err = Load(big)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), big+": file is 104857600 bytes; a postkit.yaml may be at most 1 MiB") {
		t.Fatalf("Load(100 MB file) = %v; want a size error naming the file", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("refusing a 100 MB file allocated %d bytes; want it refused before reading", alloc)
	}

	// Exactly MaxSize is accepted (padding in a comment).
	exact := filepath.Join(dir, "exact.yaml")
	pad := MaxSize - len(minimal) - len("#\n")
	os.WriteFile(exact, []byte(minimal+"#"+strings.Repeat("x", pad)+"\n"), 0o644)
	if _, _, err := Load(exact); err != nil {
		t.Errorf("Load(file of exactly %d bytes) = %v; want it accepted", MaxSize, err)
	}
	// One byte more is refused, by Parse too.
	if _, _, err := Parse("x.yaml", []byte(minimal+"#"+strings.Repeat("x", pad+1)+"\n")); err == nil || !strings.Contains(err.Error(), "at most 1 MiB") {
		t.Errorf("Parse(MaxSize+1 bytes) = %v; want a size error", err)
	}
}

// A pipe has no size to look at first: reading stops after MaxSize+1 bytes.
func TestLoadRefusesLargePipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		defer w.Close()
		w.WriteString(minimal)
		chunk := bytes.Repeat([]byte("#padding\n"), 1<<12)
		for i := 0; i < 100; i++ { // 3.6 MB, bounded
			if _, err := w.Write(chunk); err != nil {
				return // the reader gave up, as it should
			}
		}
	}()
	name := "/dev/fd/" + strconv.Itoa(int(r.Fd()))
	_, _, err = Load(name)
	if err == nil || !strings.Contains(err.Error(), "file is more than 1 MiB") {
		t.Fatalf("Load(pipe of 3.6 MB) = %v; want a size error", err)
	}
}
