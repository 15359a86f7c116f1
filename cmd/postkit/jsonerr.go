package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
)

// jsonError is what a command run with --json prints on standard output
// when it fails, instead of the "postkit: …" line on standard error, so
// that a script reading the JSON always gets JSON:
//
//	{"error": "one line", "hint": "what to do", "exit": 1,
//	 "errors": [{"file": …, "line": …, "column": …, "key": …, "message": …, "hint": …}]}
//
// hint is there when the error carries one apart from its message (config
// errors); errors lists every positioned problem of a config file or an
// import. The exit status is the same as without --json.
type jsonError struct {
	Error  string          `json:"error"`
	Hint   string          `json:"hint,omitempty"`
	Exit   int             `json:"exit"`
	Errors []jsonErrorItem `json:"errors,omitempty"`
}

type jsonErrorItem struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Key     string `json:"key,omitempty"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// statusOf is the process status for err: its ExitCode(), else 1.
func statusOf(err error) int {
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

// wantsJSON reports whether cmd was run with --json.
func wantsJSON(cmd *cobra.Command) bool {
	if cmd == nil {
		return false
	}
	f := cmd.Flags().Lookup("json")
	return f != nil && f.Value.String() == "true"
}

// reportError prints err as the command that failed asks: JSON on stdout
// with --json, else "postkit: …" on stderr. It returns the exit status.
func reportError(cmd *cobra.Command, err error, stdout, stderr io.Writer) int {
	code := statusOf(err)
	var ee *exitError
	if errors.As(err, &ee) && ee.reported && wantsJSON(cmd) {
		return code // inside the command's own JSON document
	}
	if !wantsJSON(cmd) {
		fmt.Fprintln(stderr, "postkit:", err)
		return code
	}
	je := jsonError{Error: err.Error(), Exit: code}
	var ces config.Errors
	var ce *config.Error
	var ie interface{ Items() []string }
	switch {
	case errors.As(err, &ces):
		for _, e := range ces {
			je.Errors = append(je.Errors, configItem(e))
		}
		if len(ces) == 1 {
			je.Hint = ces[0].Hint
		}
	case errors.As(err, &ce):
		je.Errors = []jsonErrorItem{configItem(ce)}
		je.Hint = ce.Hint
	case errors.As(err, &ie):
		for _, s := range ie.Items() {
			je.Errors = append(je.Errors, positioned(s))
		}
	}
	if je.Hint == "" {
		je.Hint = hintOf(err.Error())
	}
	b, _ := json.Marshal(je)
	fmt.Fprintln(stdout, string(b))
	return code
}

func configItem(e *config.Error) jsonErrorItem {
	return jsonErrorItem{File: e.File, Line: e.Pos.Line, Column: e.Pos.Column, Key: e.Key, Message: e.Msg, Hint: e.Hint}
}

// positioned splits "file:line: message" as import errors are written.
func positioned(s string) jsonErrorItem {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) == 3 {
		var line int
		if _, err := fmt.Sscanf(parts[1], "%d", &line); err == nil && line > 0 {
			return jsonErrorItem{File: parts[0], Line: line, Message: strings.TrimSpace(parts[2])}
		}
	}
	return jsonErrorItem{Message: s}
}

// hintOf finds the advice postkit's messages end with ("…: pass --cascade
// to …", "…; create it with 'postkit db init'"): the text after the last
// ": " or "; " when it names a command or flag to use.
func hintOf(msg string) string {
	msg = strings.SplitN(msg, "\n", 2)[0]
	for _, sep := range []string{": ", "; "} {
		if i := strings.LastIndex(msg, sep); i >= 0 {
			tail := msg[i+len(sep):]
			if strings.Contains(tail, "'postkit ") || strings.Contains(tail, "--") ||
				strings.HasPrefix(tail, "use ") || strings.HasPrefix(tail, "pass ") || strings.HasPrefix(tail, "run ") {
				return tail
			}
		}
	}
	return ""
}
