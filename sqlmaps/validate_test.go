package sqlmaps

import (
	"strings"
	"testing"
)

func TestCheckAction(t *testing.T) {
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"REJECT", "REJECT"},
		{"reject", "REJECT"},
		{"REJECT  not here", "REJECT not here"},
		{"DEFER try later", "DEFER try later"},
		{"DISCARD", "DISCARD"},
		{"HOLD", "HOLD"},
		{"OK", "OK"},
		{"dunno", "DUNNO"},
		{"DEFER_IF_PERMIT", "DEFER_IF_PERMIT"},
		{"554 Parle à ma main", "554 Parle à ma main"},
		{"450 4.2.0 try later", "450 4.2.0 try later"},
		{"REDIRECT admin@exemple.fr", "REDIRECT admin@exemple.fr"},
		{"BCC audit@exemple.fr", "BCC audit@exemple.fr"},
		{"FILTER smtp:[127.0.0.1]:10025", "FILTER smtp:[127.0.0.1]:10025"},
		{"PREPEND X-Flag: yes", "PREPEND X-Flag: yes"},
		{"", ""},
		{"BOUNCE", ""},
		{"OK please", ""},
		{"250 ok", ""},
		{"699 no", ""},
		{"55 no", ""},
		{"REDIRECT", ""},
		{"REDIRECT not-an-address", ""},
		{"FILTER nocolon", ""},
		{"PREPEND", ""},
		{"REJECT a\nb", ""},
	}
	for _, tt := range tests {
		got, err := CheckAction(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("CheckAction(%q) = %q; want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CheckAction(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestCheckAccessKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Tata@Tata.FR", "tata@tata.fr"},
		{"tata.fr", "tata.fr"},
		{"TATA.fr.", "tata.fr"},
		{"postmaster@", "postmaster@"},
		{"@tata.fr", ""},
		{"tata", ""},
		{"a@b@c.fr", ""},
		{"", ""},
		{"x y@z.fr", ""},
	}
	for _, tt := range tests {
		got, err := CheckAccessKey(tt.in)
		if (tt.want == "") != (err != nil) || got != tt.want {
			t.Errorf("CheckAccessKey(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestCheckDestinations(t *testing.T) {
	tests := []struct {
		in      string
		localOK bool
		want    string
	}{
		{"a@b.fr", false, "a@b.fr"},
		{"a@b.fr,c@d.fr", false, "a@b.fr, c@d.fr"},
		{" a@b.fr ,  c@d.fr ,", false, "a@b.fr, c@d.fr"},
		{"a@b.fr c@d.fr a@b.fr", false, "a@b.fr, c@d.fr"},
		{"test", true, "test"},
		{"test", false, ""},
		{"test, root@exemple.fr", true, "test, root@exemple.fr"},
		{"|/usr/bin/procmail", true, ""},
		{"/var/mail/x", true, ""},
		{":include:/etc/list", true, ""},
		{"\"|cmd\"", true, ""},
		{"", true, ""},
		{" , ", false, ""},
	}
	for _, tt := range tests {
		got, err := CheckDestinations(tt.in, tt.localOK)
		if (tt.want == "") != (err != nil) || got != tt.want {
			t.Errorf("CheckDestinations(%q, %v) = %q, %v; want %q", tt.in, tt.localOK, got, err, tt.want)
		}
	}
}

func TestCheckSources(t *testing.T) {
	tests := []struct {
		check func(string) (string, error)
		in    string
		want  string
	}{
		{CheckVirtualSource, "@Exemple.fr", "@exemple.fr"},
		{CheckVirtualSource, "Y@exemple.fr", "y@exemple.fr"},
		{CheckVirtualSource, "@", ""},
		{CheckVirtualSource, "y", ""},
		{CheckLocalName, "Postmaster", "postmaster"},
		{CheckLocalName, "first.last", "first.last"},
		{CheckLocalName, "a..b", ""},
		{CheckLocalName, "a@b.fr", ""},
		{CheckLocalName, strings.Repeat("a", 65), ""},
		{CheckDomain, "Exemple.FR.", "exemple.fr"},
		{CheckDomain, "xn--bcher-kva.de", "xn--bcher-kva.de"},
		{CheckDomain, "bücher.de", ""},
		{CheckDomain, "-a.fr", ""},
		{CheckAddress, "Test@Exemple.fr", "test@exemple.fr"},
		{CheckAddress, "test@exemple", ""},
		{CheckAddress, "te st@exemple.fr", ""},
		{CheckPrivilege, "", PrivilegeUser},
		{CheckPrivilege, "Administrateur", PrivilegeAdmin},
		{CheckPrivilege, "root", ""},
	}
	for _, tt := range tests {
		got, err := tt.check(tt.in)
		if (tt.want == "") != (err != nil) || got != tt.want {
			t.Errorf("check(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func FuzzCheckAction(f *testing.F) {
	for _, s := range []string{"REJECT", "554 no", "REDIRECT a@b.fr", "FILTER x:y", "PREPEND A: b", "", "5", "ok x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := CheckAction(s)
		if err != nil {
			return
		}
		// A valid action is stable and one line.
		again, err := CheckAction(got)
		if err != nil || again != got || strings.ContainsAny(got, "\r\n") {
			t.Errorf("CheckAction(%q) = %q, then %q, %v", s, got, again, err)
		}
	})
}

func FuzzCheckDestinations(f *testing.F) {
	for _, s := range []string{"a@b.fr", "a@b.fr, c@d.fr", "test", "|x", ""} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, localOK bool) {
		got, err := CheckDestinations(s, localOK)
		if err != nil {
			return
		}
		again, err := CheckDestinations(got, localOK)
		if err != nil || again != got || !sameList(got, again) {
			t.Errorf("CheckDestinations(%q) = %q, then %q, %v", s, got, again, err)
		}
	})
}
