package content

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"golang.org/x/text/encoding/charmap"
)

// textString returns a text part's decoded bytes as UTF-8. A charset the
// part declared was applied on reading, and what it gives is UTF-8; bytes
// that still are not come from a part that declared none, US-ASCII or a
// charset no one knows ("DEFAULT_CHARSET"), and mail readers show them in
// the charset an HTML part's <meta> names, else as Windows-1252 (a superset
// of ISO-8859-1's printable characters). Replacing them all with U+FFFD
// would turn "café" into a word no rule or Bayes token knows. A part that
// declared UTF-8 and is not keeps its valid runes.
func textString(p Part, data []byte, html bool) string {
	if utf8.Valid(data) {
		return string(data)
	}
	if cs := p.Charset; cs == "utf-8" || cs == "utf8" {
		return toValidUTF8(data)
	}
	if html {
		if label := metaCharset(data); label != "" && !strings.HasPrefix(label, "utf") {
			if r, err := charset.Reader(label, bytes.NewReader(data)); err == nil {
				if out, err := io.ReadAll(r); err == nil {
					return toValidUTF8(out)
				}
			}
		}
	}
	out, err := charmap.Windows1252.NewDecoder().Bytes(data)
	if err != nil {
		return toValidUTF8(data)
	}
	return toValidUTF8(out)
}

// metaRe finds the charset an HTML document names in a <meta> tag, either
// form (<meta charset=…> or http-equiv's content="text/html; charset=…").
var metaRe = regexp.MustCompile(`(?i)<meta\b[^>]*?\bcharset\s*=\s*["']?\s*([a-z0-9_.:-]+)`)

// metaCharset returns the lower-cased charset named by a <meta> tag in the
// first 2 KB of an HTML part, or "".
func metaCharset(data []byte) string {
	if len(data) > 2048 {
		data = data[:2048]
	}
	if m := metaRe.FindSubmatch(data); m != nil {
		return strings.ToLower(string(m[1]))
	}
	return ""
}
