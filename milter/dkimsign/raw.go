package dkimsign

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/postkit/postkit/milter/header"
)

// Sign signs a whole message read from r (outside the milter chain: the
// `postkit dkim` command, tests, benchmarks). It returns the DKIM-Signature
// values to prepend, without the field name, for the keys of the From
// domain; none (and no error) when that domain has no key.
func (s *Signer) Sign(r io.Reader) ([]string, error) {
	br := bufio.NewReader(r)
	hs, err := header.Read(br)
	if err != nil {
		return nil, err
	}
	set := s.set.Load()
	from, err := header.FromAddress(hs)
	if err != nil {
		return nil, err
	}
	keys := set.lookup(from)
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

// reason is an error's text for a log line or a reply, without the
// package prefix.
func reason(err error) string {
	s := err.Error()
	for _, p := range []string{"header: ", "dkimsign: "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}
