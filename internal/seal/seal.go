// Package seal marks the header fields postkit's policy daemon asks Postfix
// to prepend (Received-SPF, RFC 7208 section 9.1) with a message
// authentication code (HMAC-SHA256, RFC 2104) bound to the SMTP transaction,
// so that postkit's milter can tell them from copies a client wrote into its
// own header.
//
// Why a code and not a position: measured on Postfix 3.7.11, headers that an
// access map or a policy service PREPENDs are written above Postfix's own
// Received field, reach the smtpd milter as the first headers of the
// message, and count in the milter's header indexes like any other field
// (deleting "Received-SPF" occurrence 1 deletes the prepended one). The
// client's header follows, but Postfix's own Received field, the only
// boundary between the two, is never shown to the milter: when the policy
// daemon prepends nothing (an allowed client, a skipped check), a field the
// client put at the top of its header looks the same. A forger does not
// have the key, so a field whose code verifies was added by our policy
// daemon for this client, HELO name, sender and connection.
//
// The key is 32 random bytes in a file both daemons read (Load, LoadOrCreate):
// the policy daemon creates it on first start, mode 0640.
package seal

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// KeyFile is the key file's name under paths.postkit_run (postkit.yaml): the
// policy daemon creates it there, the milter reads it.
const KeyFile = "seal.key"

// Param is the key of the key-value pair that carries the code: RFC 7208
// section 9.1 allows further "name=value" pairs after the defined ones.
const Param = "x-postkit-seal"

// keySize is the HMAC key length (RFC 2104 section 3: at least the output
// length of the hash).
const keySize = 32

// codeLen is the length of the code kept, in bytes: 128 bits (RFC 2104
// section 5 allows truncation to half the output or more).
const codeLen = 16

// Tx names one SMTP transaction as both Postfix's policy protocol
// (client_address, client_port, helo_name, sender) and the milter protocol
// (connect, HELO and MAIL events) tell it.
type Tx struct {
	Addr   netip.Addr
	Port   int
	Helo   string
	Sender string
}

// Key is an HMAC key. The zero Key seals nothing and verifies nothing.
type Key struct{ b []byte }

// Valid reports whether k holds a key.
func (k Key) Valid() bool { return len(k.b) == keySize }

// Seal returns line ("Name: value") with the code appended as a last
// "x-postkit-seal=CODE;" pair. An Authentication-Results field, whose
// grammar has no room for such a pair (RFC 8601 section 2.2), carries it in
// a final comment instead: "(x-postkit-seal=CODE)". With an invalid key it
// returns line unchanged.
func (k Key) Seal(tx Tx, line string) string {
	name, value, ok := strings.Cut(line, ":")
	if !ok || !k.Valid() {
		return line
	}
	code := k.code(tx, name, canonical(value))
	if commentForm(name) {
		return line + " (" + Param + "=" + code + ")"
	}
	return line + " " + Param + "=" + code + ";"
}

// commentForm reports whether a field carries its code in a comment.
func commentForm(name string) bool {
	return strings.EqualFold(strings.TrimSpace(name), "Authentication-Results")
}

// Verify reports whether a field (name and value as the milter sees them,
// folded or not) carries a code made with k for tx.
func (k Key) Verify(tx Tx, name, value string) bool {
	if !k.Valid() {
		return false
	}
	v := " " + canonical(value) // the pair may be all there is
	open, end := " "+Param+"=", ";"
	if commentForm(name) {
		open, end = " ("+Param+"=", ")"
	}
	i := strings.LastIndex(v, open)
	if i < 0 || !strings.HasSuffix(v, end) {
		return false
	}
	got := v[i+len(open) : len(v)-1]
	want := k.code(tx, name, strings.TrimPrefix(v[:i], " "))
	return hmac.Equal([]byte(got), []byte(want))
}

// code is the base64url HMAC of the transaction, the field name and the
// canonical value. Names and addresses are compared case-insensitively, as
// SMTP does; the port and address are in their canonical text form.
func (k Key) code(tx Tx, name, value string) string {
	m := hmac.New(sha256.New, k.b)
	for _, s := range []string{"postkit-seal-1", tx.Addr.Unmap().String(), strconv.Itoa(tx.Port),
		strings.ToLower(tx.Helo), strings.ToLower(tx.Sender), strings.ToLower(strings.TrimSpace(name)), value} {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:codeLen])
}

// canonical unfolds a value and reduces every run of white space to one
// space (RFC 5322 section 2.2.3 folding; Postfix may fold long lines).
func canonical(v string) string {
	return strings.Join(strings.Fields(v), " ")
}

// ErrNoKey is returned by Load when the key file does not exist yet.
var ErrNoKey = errors.New("seal: no key file")

// Load reads the key file at path.
func Load(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Key{}, fmt.Errorf("%w %s: the policy daemon creates it on start (paths.postkit_run)", ErrNoKey, path)
	}
	if err != nil {
		return Key{}, fmt.Errorf("seal: %w", err)
	}
	if len(b) != keySize {
		return Key{}, fmt.Errorf("seal: key file %s holds %d bytes, want %d: delete it and restart the policy daemon", path, len(b), keySize)
	}
	return Key{b: b}, nil
}

// LoadOrCreate reads the key file at path, creating it (and its directory,
// mode 0750) with a new random key, mode 0640, if it does not exist. Two
// processes starting at once agree on one key: the file appears whole or
// not at all (written under a temporary name, then linked).
func LoadOrCreate(path string) (Key, error) {
	if k, err := Load(path); !errors.Is(err, ErrNoKey) {
		return k, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return Key{}, fmt.Errorf("seal: key directory: %w; set paths.postkit_run to a directory the daemon may write", err)
	}
	b := make([]byte, keySize)
	if _, err := rand.Read(b); err != nil {
		return Key{}, fmt.Errorf("seal: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".seal-key-")
	if err != nil {
		return Key{}, fmt.Errorf("seal: %w; set paths.postkit_run to a directory the daemon may write", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o640); err != nil {
		tmp.Close()
		return Key{}, fmt.Errorf("seal: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return Key{}, fmt.Errorf("seal: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Key{}, fmt.Errorf("seal: %w", err)
	}
	// link(2) fails if path exists: the first process wins, the others
	// read its key.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return Key{}, fmt.Errorf("seal: %w", err)
	}
	return Load(path)
}

// File is a key read from a file again whenever the file changes, so that
// the milter, which may start before the policy daemon created the key,
// follows it without a restart and never keeps a replaced key.
type File struct {
	path string

	mu  sync.Mutex
	id  fileID
	key Key
	err error
}

type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

// NewFile returns a File for path; nothing is read before Key.
func NewFile(path string) *File { return &File{path: path} }

// Path is the key file's name.
func (f *File) Path() string { return f.path }

// Key returns the file's current key, or the error reading it.
func (f *File) Key() (Key, error) {
	fi, err := os.Stat(f.path)
	var id fileID
	if err == nil {
		id = fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			id.dev, id.ino = uint64(st.Dev), uint64(st.Ino)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && id == f.id && f.key.Valid() {
		return f.key, nil
	}
	f.id = id
	f.key, f.err = Load(f.path)
	return f.key, f.err
}

// Equal reports whether two keys are the same (for tests and logs).
func (k Key) Equal(o Key) bool { return bytes.Equal(k.b, o.b) }
