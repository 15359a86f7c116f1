package spam

import (
	"fmt"
	"math"
	"strings"
)

// The header fields this package writes, as SpamAssassin names them, so that
// the Sieve rules and mail clients that read them keep working.
const (
	FieldFlag    = "X-Spam-Flag"
	FieldStatus  = "X-Spam-Status"
	FieldLevel   = "X-Spam-Level"
	FieldReport  = "X-Spam-Report"
	FieldChecker = "X-Spam-Checker-Version"
)

// DefaultSubjectTag is the subject prefix of RewriteSubject.
const DefaultSubjectTag = "*****SPAM*****"

// Field is one header field to add. Value may be folded: continuation lines
// start with "\n\t" (as milters send them: Postfix turns them into CRLF).
type Field struct {
	Name, Value string
}

// HeaderOptions choose the optional fields.
type HeaderOptions struct {
	// Report adds X-Spam-Report (every test that hit, with its score and
	// description).
	Report bool
	// Host names this server in X-Spam-Checker-Version; "" leaves it out.
	Host string
}

// Fields returns the header fields for a result, in the order to add them:
// X-Spam-Checker-Version, X-Spam-Flag (spam only), X-Spam-Level,
// X-Spam-Status and, when asked, X-Spam-Report.
func Fields(r Result, opt HeaderOptions) []Field {
	out := []Field{{FieldChecker, CheckerVersion(opt.Host)}}
	if r.Spam() {
		out = append(out, Field{FieldFlag, "YES"})
	}
	out = append(out, Field{FieldLevel, Level(r)}, Field{FieldStatus, Status(r)})
	if opt.Report {
		out = append(out, Field{FieldReport, Report(r)})
	}
	return out
}

// CheckerVersion is X-Spam-Checker-Version: "postkit-spam 1.0 on HOST".
func CheckerVersion(host string) string {
	if host == "" {
		return Version
	}
	return Version + " on " + host
}

// formatScore writes a score as SpamAssassin does: one decimal, "-0.0"
// written as "0.0".
func formatScore(s float64) string {
	v := fmt.Sprintf("%.1f", s)
	if v == "-0.0" {
		v = "0.0"
	}
	return v
}

// Status is X-Spam-Status: "Yes, score=5.3 required=5.0
// tests=RULE_A,RULE_B autolearn=no version=…", folded before the tests
// list runs past 78 columns.
func Status(r Result) string {
	yn := "No"
	if r.Spam() {
		yn = "Yes"
	}
	names := make([]string, 0, len(r.Hits))
	for _, h := range r.Hits {
		names = append(names, h.Name)
	}
	tests := "none"
	if len(names) > 0 {
		tests = strings.Join(names, ",")
	}
	al := r.Autolearn
	if al == "" {
		al = "no"
	}
	s := fmt.Sprintf("%s, score=%s required=%s tests=%s autolearn=%s version=%s",
		yn, formatScore(r.Score), formatScore(r.Required), tests, al, strings.ReplaceAll(Version, " ", "-"))
	return fold(s, len(FieldStatus)+2)
}

// fold breaks s after commas or before spaces so that no line exceeds 78
// columns (the first line starts at column start), continuation lines
// starting with "\n\t".
func fold(s string, start int) string {
	const width = 78
	var b strings.Builder
	col := start
	for len(s) > 0 {
		// The next piece: leading spaces, then a word up to and including
		// a comma, or up to the next space.
		j := 0
		for j < len(s) && s[j] == ' ' {
			j++
		}
		end := len(s)
		if k := strings.IndexAny(s[j:], ", "); k >= 0 {
			end = j + k
			if s[end] == ',' {
				end++
			}
		}
		piece := s[:end]
		s = s[end:]
		if col+len(piece) > width && col > 8 {
			b.WriteString("\n\t")
			col = 8
			piece = strings.TrimLeft(piece, " ")
		}
		b.WriteString(piece)
		col += len(piece)
	}
	return b.String()
}

// Level is X-Spam-Level: one star per whole point, at most 50; empty for a
// score below 1.
func Level(r Result) string {
	n := int(math.Floor(r.Score))
	if n < 0 {
		n = 0
	}
	if n > 50 {
		n = 50
	}
	return strings.Repeat("*", n)
}

// Report is X-Spam-Report: a line per test that hit ("*  1.2 NAME
// Description"), folded.
func Report(r Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Content analysis details: (%s points, %s required)", formatScore(r.Score), formatScore(r.Required))
	for _, h := range r.Hits {
		desc := h.Description
		if desc == "" {
			desc = h.Name
		}
		fmt.Fprintf(&b, "\n\t* %5s %s %s", formatScore(h.Score), h.Name, oneLine(desc, 60))
	}
	return b.String()
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "")
	}
	return s
}

// RewriteSubject prefixes subject with tag (DefaultSubjectTag when empty),
// once: a subject that already starts with it is returned as it is.
func RewriteSubject(subject, tag string) string {
	if tag == "" {
		tag = DefaultSubjectTag
	}
	if strings.HasPrefix(subject, tag) {
		return subject
	}
	if subject == "" {
		return tag
	}
	return tag + " " + subject
}

// Describe is the report `postkit spam check` prints after the message, in
// the layout of `spamassassin -t`: the score, then each test that hit with
// its score and description, then what Bayes said.
func Describe(r Result) string {
	var b strings.Builder
	verdict := "not spam"
	if r.Spam() {
		verdict = "SPAM"
	}
	fmt.Fprintf(&b, "Content analysis details:   (%s points, %s required: %s)\n\n", formatScore(r.Score), formatScore(r.Required), verdict)
	b.WriteString("   pts rule name              description\n")
	b.WriteString("------ ---------------------- --------------------------------------------------\n")
	for _, h := range r.Hits {
		fmt.Fprintf(&b, "%6s %-22s %s\n", formatScore(h.Score), h.Name, oneLine(h.Description, 50))
	}
	if len(r.Hits) == 0 {
		b.WriteString("       (no test hit)\n")
	}
	b.WriteByte('\n')
	if r.Bayes >= 0 {
		fmt.Fprintf(&b, "Bayes: spam probability %.4f\n", r.Bayes)
	} else {
		note := r.BayesNote
		if note == "" {
			note = "did not vote"
		}
		fmt.Fprintf(&b, "Bayes: not used (%s)\n", note)
	}
	fmt.Fprintf(&b, "Autolearn: %s\n", r.Autolearn)
	return b.String()
}

// isSpamField reports the X-Spam-* fields, which only this server may
// write.
func isSpamField(name string) bool {
	return len(name) >= 7 && strings.EqualFold(name[:7], "X-Spam-")
}

// Annotate returns raw with the X-Spam-* fields it arrived with removed,
// fields added at the end of the header, and, when subjectTag is not
// empty, the Subject rewritten with RewriteSubject (added when missing).
// Line endings follow the message's (CRLF when its first line ends so).
// `postkit spam check` prints what it returns; the milter filter makes the
// same changes through the milter protocol.
func Annotate(raw []byte, fields []Field, subjectTag string) []byte {
	nl := "\n"
	if i := strings.IndexByte(string(raw[:min(len(raw), 4096)]), '\n'); i > 0 && raw[i-1] == '\r' {
		nl = "\r\n"
	}
	s := string(raw)
	head, body := s, ""
	if i := strings.Index(s, nl+nl); i >= 0 {
		head, body = s[:i+len(nl)], s[i+len(nl):]
	} else if strings.HasPrefix(s, nl) {
		head, body = "", s
	} else if !strings.HasSuffix(head, nl) && head != "" {
		head += nl
		body = nl
	} else {
		body = nl
	}
	var out strings.Builder
	out.Grow(len(raw) + 512)
	// Group the header's lines into fields (a field and its continuation
	// lines).
	var blocks []string
	for _, l := range strings.SplitAfter(head, nl) {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(blocks) > 0 {
			blocks[len(blocks)-1] += l
			continue
		}
		blocks = append(blocks, l)
	}
	sawSubject := false
	for _, b := range blocks {
		name, value, _ := strings.Cut(b, ":")
		name = strings.TrimSpace(name)
		if isSpamField(name) {
			continue
		}
		if subjectTag != "" && strings.EqualFold(name, "Subject") && !sawSubject {
			sawSubject = true
			v := strings.Join(strings.Fields(value), " ")
			out.WriteString(name + ": " + RewriteSubject(v, subjectTag) + nl)
			continue
		}
		out.WriteString(b)
	}
	if subjectTag != "" && !sawSubject {
		out.WriteString("Subject: " + RewriteSubject("", subjectTag) + nl)
	}
	for _, f := range fields {
		out.WriteString(f.Name + ": " + strings.ReplaceAll(f.Value, "\n", nl) + nl)
	}
	out.WriteString(body)
	return []byte(out.String())
}
