package content

import (
	"regexp"
	"strings"

	"golang.org/x/net/html"
)

// maxHTMLTokens bounds the feature tokens kept from HTML.
const maxHTMLTokens = 300

// renderHTML renders an HTML part to the text a reader sees (script, style
// and head contents dropped, block elements on lines of their own), noting
// links and tag features on the way.
func (w *walker) renderHTML(s string) string {
	m := w.m
	m.HTML.Parts++
	z := html.NewTokenizer(strings.NewReader(s))
	var b strings.Builder
	// The tokenizer returns what a script, style, title or noscript element
	// holds as one text token after its start tag, up to its end tag or
	// the end of the part: that token is dropped. (A counter of open
	// elements would hide the rest of the part after a <head> that is
	// never closed, which browsers and mail readers ignore.)
	hide := false
	seenTok := map[string]bool{}
	tok := func(t string) {
		if len(m.HTML.Tokens) < maxHTMLTokens && !seenTok[t] {
			seenTok[t] = true
			m.HTML.Tokens = append(m.HTML.Tokens, t)
		}
	}
	for b.Len() < m.lim.MaxText {
		tt := z.Next()
		hidden := hide
		hide = false
		switch tt {
		case html.ErrorToken:
			out := b.String()
			m.HTML.TextBytes += len(out)
			return out
		case html.TextToken:
			if !hidden {
				b.Write(z.Text())
			}
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			name, hasAttr := z.TagName()
			tag := string(name)
			if tt == html.EndTagToken {
				if blockTag[tag] {
					b.WriteByte('\n')
				}
				continue
			}
			m.HTML.Tags++
			if notableTag[tag] {
				tok(tag)
			}
			switch tag {
			case "script", "style", "title", "noscript":
				hide = tt == html.StartTagToken
			case "img":
				m.HTML.Images++
			case "br":
				b.WriteByte('\n')
			}
			if blockTag[tag] {
				b.WriteByte('\n')
			}
			for hasAttr {
				var k, v []byte
				k, v, hasAttr = z.TagAttr()
				key := string(k)
				switch key {
				case "href", "src", "action", "background":
					u := strings.TrimSpace(string(v))
					if u != "" && !strings.HasPrefix(u, "#") && !strings.HasPrefix(strings.ToLower(u), "javascript:") {
						if strings.Contains(u, ":") || strings.HasPrefix(u, "www.") {
							m.addURI(u)
						}
					}
				case "color", "bgcolor", "size", "face", "style":
					tok(tag + ":" + key)
					if key == "style" {
						if sv := strings.ToLower(string(v)); strings.Contains(sv, "display:none") || strings.Contains(sv, "visibility:hidden") || strings.Contains(sv, "font-size:0") || strings.Contains(sv, "font-size: 0") {
							tok("style:hidden")
						}
					}
					if tag == "font" && key == "size" {
						tok("font:size:" + strings.TrimSpace(string(v)))
					}
				}
			}
		case html.CommentToken:
			tok("comment")
		}
	}
	m.Truncated = true
	out := b.String()
	m.HTML.TextBytes += len(out)
	return out
}

// notableTag are the tags whose presence is a feature; the common ones
// (html, body, p, a, font, table…) travel together and would only repeat
// one piece of evidence, "this is HTML", many times over.
var notableTag = map[string]bool{
	"img": true, "form": true, "input": true, "script": true, "iframe": true, "object": true,
	"embed": true, "map": true, "area": true, "style": true, "center": true, "blink": true,
	"marquee": true, "basefont": true, "base": true, "frame": true, "frameset": true, "meta": true,
}

var blockTag = map[string]bool{
	"p": true, "div": true, "table": true, "tr": true, "td": true, "th": true, "li": true,
	"ul": true, "ol": true, "h1": true, "h2": true, "h3": true, "h4": true, "h5": true,
	"h6": true, "blockquote": true, "pre": true, "hr": true, "center": true, "form": true,
}

// uriRE finds links in plain text: a scheme and what follows, or a bare
// www. host.
var uriRE = regexp.MustCompile(`(?i)\b(?:https?://|ftp://|www\.)[^\s<>"'()\[\]{}]{2,}`)

// maxURIs bounds the links findURIs returns.
const maxURIs = 300

// findURIs returns the links in text, at most maxURIs. A link holds no
// white space, so it lies within a line: the regexp reads only the lines
// that hold "://" or "www." (the text around them is most of a message).
func findURIs(text string) []string {
	var locs []string
	for len(text) > 0 && len(locs) < maxURIs {
		line := text
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = ""
		}
		if !strings.Contains(line, "://") && !containsWWW(line) {
			continue
		}
		locs = append(locs, uriRE.FindAllString(line, maxURIs-len(locs))...)
	}
	for i, u := range locs {
		locs[i] = strings.TrimRight(u, ".,;:!?*")
	}
	return locs
}

// containsWWW reports whether s holds "www." in any case.
func containsWWW(s string) bool {
	for {
		i := strings.IndexAny(s, "wW")
		if i < 0 || len(s)-i < 4 {
			return false
		}
		if strings.EqualFold(s[i:i+4], "www.") {
			return true
		}
		s = s[i+1:]
	}
}

// Host returns the lower-case host of a URI (or of a bare "www.host/…"),
// without port or user info; "" when it has none.
func Host(u string) string {
	s := u
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	} else if i := strings.IndexByte(s, ':'); i >= 0 && !strings.HasPrefix(strings.ToLower(s), "www.") {
		s = s[i+1:]
		if strings.Contains(s, "@") && !strings.ContainsAny(s, "/") { // mailto:
			return Domain(s)
		}
	}
	if i := strings.IndexAny(s, "/?#\\"); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		s = s[i+1:]
	}
	if strings.HasPrefix(s, "[") {
		if i := strings.IndexByte(s, ']'); i > 0 {
			return strings.ToLower(s[1:i])
		}
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		s = s[:i]
	}
	return strings.ToLower(strings.TrimSuffix(s, "."))
}
