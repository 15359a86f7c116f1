package policyd

import "strings"

// Temporary reports whether action is an access(5) answer that only asks
// the client to retry: DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT or a 4xx
// code, each optionally followed by text. What a check answers when its own
// state is out of reach must be one of these: an outage never refuses mail
// for good.
func Temporary(action string) bool {
	word, _, _ := strings.Cut(strings.TrimSpace(action), " ")
	switch strings.ToUpper(word) {
	case "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT":
		return true
	}
	return len(word) == 3 && word[0] == '4' && word[1] >= '0' && word[1] <= '9' && word[2] >= '0' && word[2] <= '9'
}
