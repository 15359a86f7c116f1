package dkimsign

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/postkit/postkit/milter/filter"
)

// maxHeaderBytes bounds ReadHeaders (Postfix's header_size_limit default).
const maxHeaderBytes = 102400

// ReadHeaders reads a message header block up to and including the empty
// line, in the form the milter protocol gives it: Value without the single
// space after the colon, continuation lines kept with CRLF. Lines may end in
// CRLF or LF. A message without body separator ends at EOF.
func ReadHeaders(br *bufio.Reader) ([]filter.Header, error) {
	var hs []filter.Header
	total := 0
	for {
		line, err := br.ReadString('\n')
		total += len(line)
		if total > maxHeaderBytes {
			return hs, fmt.Errorf("dkimsign: header block longer than %d bytes", maxHeaderBytes)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if err != nil && err != io.EOF {
				return hs, fmt.Errorf("dkimsign: reading header: %w", err)
			}
			return hs, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(hs) == 0 {
				return hs, errors.New("dkimsign: message starts with a continuation line")
			}
			hs[len(hs)-1].Value += "\r\n" + line
		} else {
			name, value, ok := strings.Cut(line, ":")
			if !ok || strings.TrimRight(name, " \t") == "" {
				return hs, fmt.Errorf("dkimsign: header line without colon: %.40q", line)
			}
			hs = append(hs, filter.Header{Name: strings.TrimRight(name, " \t"), Value: strings.TrimPrefix(value, " ")})
		}
		if err != nil {
			if err == io.EOF {
				return hs, nil
			}
			return hs, fmt.Errorf("dkimsign: reading header: %w", err)
		}
	}
}

// Sign signs a whole message read from r (outside the milter chain: the
// `postkit dkim` command, tests, benchmarks). It returns the DKIM-Signature
// values to prepend, without the field name, for the keys of the From
// domain; none (and no error) when that domain has no key.
func (s *Signer) Sign(r io.Reader) ([]string, error) {
	br := bufio.NewReader(r)
	hs, err := ReadHeaders(br)
	if err != nil {
		return nil, err
	}
	set := s.set.Load()
	dom, err := FromDomain(hs)
	if err != nil {
		return nil, err
	}
	keys := set.lookup(dom)
	var use []*key
	for _, k := range keys {
		if !signedBy(hs, k.domain, k.selector) {
			use = append(use, k)
		}
	}
	if len(use) == 0 {
		return nil, nil
	}
	ms := s.newMessage(set, use)
	if _, err := br.WriteTo(ms.canon); err != nil {
		return nil, fmt.Errorf("dkimsign: reading body: %w", err)
	}
	return ms.sign(hs)
}
