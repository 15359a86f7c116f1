package rules

import (
	"errors"
	"net/mail"
	"net/netip"
	"strings"
	"time"

	"github.com/postkit/postkit/spam/content"
)

// Header sanity tests: what a sender's own software writes and bulk-mailing
// software gets wrong (a Date hours ahead of the arrival, a free-mail From
// that no free-mail server handled, a bare address as HELO).

func init() {
	funcs["date_future"] = evalFunc{"date_future(HOURS): the Date field is more than HOURS hours later than the arrival (the newest Received field's date when the caller did not give it)", dateSkewTest(1)}
	funcs["date_past"] = evalFunc{"date_past(HOURS): the Date field is more than HOURS hours earlier than the arrival", dateSkewTest(-1)}
	funcs["date_weekday_wrong"] = evalFunc{"date_weekday_wrong(): the Date field names a day of the week its date does not fall on", func(a []string) (func(*Context) bool, error) {
		if len(a) != 0 {
			return nil, errors.New("date_weekday_wrong takes no arguments")
		}
		return func(c *Context) bool {
			v := strings.TrimSpace(c.Msg.Get("Date"))
			day, _, ok := strings.Cut(v, ",")
			if !ok || len(day) != 3 {
				return false
			}
			d, ok := c.date()
			return ok && !strings.EqualFold(day, d.Weekday().String()[:3])
		}, nil
	}}
	funcs["forged_freemail"] = evalFunc{"forged_freemail(): From is a large free-mail provider's address, yet no Received field names the provider's servers and no valid DKIM signature of its domain is present", func(a []string) (func(*Context) bool, error) {
		if len(a) != 0 {
			return nil, errors.New("forged_freemail takes no arguments")
		}
		return forgedFreemail, nil
	}}
	funcs["helo_numeric"] = evalFunc{"helo_numeric(): the client greeted with a bare IP address (the HELO the caller gave, else the newest Received field's from clause)", func(a []string) (func(*Context) bool, error) {
		if len(a) != 0 {
			return nil, errors.New("helo_numeric takes no arguments")
		}
		return func(c *Context) bool {
			h := c.Helo
			if h == "" {
				rc := c.Msg.Values("Received")
				if len(rc) == 0 {
					return false
				}
				f := strings.Fields(rc[0])
				if len(f) < 2 || !strings.EqualFold(f[0], "from") {
					return false
				}
				h = f[1]
			}
			h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
			ip, err := netip.ParseAddr(h)
			return err == nil && ip.Is4()
		}, nil
	}}
	funcs["subject_rcpt_domain"] = evalFunc{"subject_rcpt_domain(): the Subject is nothing but a domain name, and it is a recipient's domain or a parent or subdomain of one (as link-building and site-promotion pitches name the site they write to)", func(a []string) (func(*Context) bool, error) {
		if len(a) != 0 {
			return nil, errors.New("subject_rcpt_domain takes no arguments")
		}
		return subjectRcptDomain, nil
	}}
}

// dateSkewTest parses HOURS and returns the test that the Date field is
// more than HOURS after (sign 1) or before (sign -1) the arrival.
func dateSkewTest(sign time.Duration) func([]string) (func(*Context) bool, error) {
	return func(a []string) (func(*Context) bool, error) {
		h, err := oneInt(a)
		if err != nil {
			return nil, err
		}
		lim := time.Duration(h) * time.Hour
		return func(c *Context) bool {
			skew, ok := c.dateSkew()
			return ok && sign*skew > lim
		}, nil
	}
}

// date is the Date field's time, parsed once for the rules that read it.
func (c *Context) date() (time.Time, bool) {
	if !c.dateDone {
		c.dateDone = true
		d, err := mail.ParseDate(strings.TrimSpace(c.Msg.Get("Date")))
		c.dateVal, c.dateOK = d, err == nil
	}
	return c.dateVal, c.dateOK
}

// dateSkew is the Date field minus the arrival time.
func (c *Context) dateSkew() (time.Duration, bool) {
	if !c.skewDone {
		c.skewDone = true
		d, ok := c.date()
		if !ok {
			return 0, false
		}
		at := c.Now
		if at.IsZero() {
			at = newestReceived(c.Msg)
		}
		if at.IsZero() {
			at = time.Now()
		}
		c.skew, c.skewOK = d.Sub(at), true
	}
	return c.skew, c.skewOK
}

// newestReceived is the date of the first Received field (the newest) that
// has one, or zero.
func newestReceived(m *content.Message) time.Time {
	for i, v := range m.Values("Received") {
		if i >= 3 {
			break
		}
		if j := strings.LastIndexByte(v, ';'); j >= 0 {
			if t, err := mail.ParseDate(strings.TrimSpace(v[j+1:])); err == nil {
				return t
			}
		}
	}
	return time.Time{}
}

// freemail maps free-mail domains to the domains their outbound servers'
// names end in (as Received fields name them).
var freemail = map[string][]string{
	"hotmail.com": {"hotmail.com", "outlook.com", "msn.com", "live.com"},
	"msn.com":     {"hotmail.com", "outlook.com", "msn.com", "live.com"},
	"live.com":    {"hotmail.com", "outlook.com", "msn.com", "live.com"},
	"outlook.com": {"hotmail.com", "outlook.com", "msn.com", "live.com"},
	"yahoo.com":   {"yahoo.com", "yahoo.net", "yahoodns.net", "yahoo.co"},
	"aol.com":     {"aol.com", "aol.net", "yahoo.com", "yahoodns.net"},
	"gmail.com":   {"google.com", "gmail.com"},
}

func forgedFreemail(c *Context) bool {
	from := c.Msg.Addresses("From")
	if len(from) == 0 {
		return false
	}
	dom := strings.ToLower(content.Domain(from[0].Addr))
	servers, ok := freemail[dom]
	rcvd := c.Msg.Values("Received")
	if !ok || len(rcvd) == 0 || c.Facts["dkim_valid_from"] {
		return false
	}
	for _, v := range rcvd {
		lv := strings.ToLower(v)
		for _, s := range servers {
			if strings.Contains(lv, s) {
				return false
			}
		}
	}
	return true
}

// subjectRcptDomain reports whether the Subject is a bare domain name that a
// To or Cc address's domain equals, ends in or is the end of.
func subjectRcptDomain(c *Context) bool {
	subj := strings.ToLower(strings.TrimSpace(c.Msg.Get("Subject")))
	subj = strings.TrimPrefix(strings.TrimPrefix(subj, "http://"), "www.")
	subj = strings.TrimSuffix(subj, "/")
	if strings.Count(subj, ".") == 0 || strings.IndexFunc(subj, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-')
	}) >= 0 {
		return false
	}
	for _, f := range []string{"To", "Cc"} {
		for _, ad := range c.Msg.Addresses(f) {
			d := strings.ToLower(content.Domain(ad.Addr))
			if d == "" {
				continue
			}
			if d == subj || strings.HasSuffix(d, "."+subj) || strings.HasSuffix(subj, "."+d) {
				return true
			}
		}
	}
	return false
}
