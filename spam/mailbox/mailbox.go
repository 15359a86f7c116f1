// Package mailbox reads the messages of Maildir folders
// (https://cr.yp.to/proto/maildir.html: cur/ and new/, Maildir++ subfolders)
// and mbox files (RFC 4155, "From " lines; mboxrd's ">From " quoting undone)
// for `postkit spam learn`.
package mailbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// MaxMessage bounds one message read; larger ones are skipped with an
// error passed to the callback (learning them would cost more than it
// teaches).
const MaxMessage = 32 << 20

// ErrTooLarge is passed for a message over MaxMessage.
var ErrTooLarge = errors.New("mailbox: message larger than 32 MiB, skipped")

// Func receives one message: where it came from (a file path, or an mbox
// path and message number) and its bytes, or the error reading it. Returning
// an error stops the walk.
type Func func(name string, raw []byte, err error) error

// Walk calls fn for every message under path: a Maildir (a directory with
// cur/ or new/; its subfolders too), a directory of Maildirs or message
// files, an mbox file, or a single message file.
func Walk(path string, fn Func) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("mailbox: %w", err)
	}
	if !st.IsDir() {
		return walkFile(path, fn)
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fn(p, nil, err)
		}
		if d.IsDir() {
			if d.Name() == "tmp" && isMaildir(filepath.Dir(p)) {
				return filepath.SkipDir // messages still being delivered
			}
			return nil
		}
		if !d.Type().IsRegular() || skipName(d.Name()) {
			return nil
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, f := range files {
		if err := walkFile(f, fn); err != nil {
			return err
		}
	}
	return nil
}

// skipName leaves out the index and state files mail programs keep next
// to the messages.
func skipName(n string) bool {
	return strings.HasPrefix(n, "dovecot") || strings.HasPrefix(n, ".") ||
		n == "maildirfolder" || n == "subscriptions" || n == "courierimapuiddb" ||
		strings.HasSuffix(n, ".sieve") || strings.HasSuffix(n, ".svbin") || strings.HasSuffix(n, ".lock")
}

func isMaildir(dir string) bool {
	for _, sub := range []string{"cur", "new"} {
		if st, err := os.Stat(filepath.Join(dir, sub)); err == nil && st.IsDir() {
			return true
		}
	}
	return false
}

// walkFile reads one file: an mbox when it starts with "From ", else one
// message.
func walkFile(path string, fn Func) error {
	f, err := os.Open(path)
	if err != nil {
		return fn(path, nil, err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	head, _ := br.Peek(5)
	if string(head) == "From " {
		return readMbox(path, br, fn)
	}
	raw, err := io.ReadAll(io.LimitReader(br, MaxMessage+1))
	if err != nil {
		return fn(path, nil, err)
	}
	if len(raw) > MaxMessage {
		return fn(path, nil, ErrTooLarge)
	}
	return fn(path, raw, nil)
}

// readMbox splits an mbox at its "From " lines. A ">From " line (any
// number of '>') loses one '>', as mboxrd writers quote them; in mboxo
// files this also unquotes lines that were written with one '>', which
// changes nothing a classifier sees.
func readMbox(path string, br *bufio.Reader, fn Func) error {
	var cur bytes.Buffer
	n := 0
	tooLarge := false
	flush := func() error {
		if n == 0 {
			return nil
		}
		name := fmt.Sprintf("%s#%d", path, n)
		if tooLarge {
			return fn(name, nil, ErrTooLarge)
		}
		raw := bytes.Clone(cur.Bytes())
		// The blank line before the next "From " belongs to the mbox.
		if bytes.HasSuffix(raw, []byte("\n\n")) {
			raw = raw[:len(raw)-1]
		}
		return fn(name, raw, nil)
	}
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A very long line: keep reading it whole.
			rest, err2 := br.ReadBytes('\n')
			line = append(append([]byte(nil), line...), rest...)
			err = err2
		}
		if len(line) > 0 {
			switch {
			case bytes.HasPrefix(line, []byte("From ")):
				if err := flush(); err != nil {
					return err
				}
				n++
				cur.Reset()
				tooLarge = false
			case tooLarge:
			default:
				if q := bytes.TrimLeft(line, ">"); len(q) < len(line) && bytes.HasPrefix(q, []byte("From ")) {
					line = line[1:]
				}
				if cur.Len()+len(line) > MaxMessage {
					tooLarge = true
					cur.Reset()
				} else {
					cur.Write(line)
				}
			}
		}
		if err == io.EOF {
			return flush()
		}
		if err != nil {
			return fn(path, nil, err)
		}
	}
}
