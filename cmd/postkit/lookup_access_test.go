package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/sqlmaps"
)

// lookup applies access(5)'s search to the blacklists as check_sender_access
// does: each key it tries is what postmap -q answers for that key, and the
// first found decides.
func TestLookupAccessSearch(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "postfix.sqlite")
	for _, args := range [][]string{
		{"db", "--db", db, "init", "exemple.fr"},
		{"db", "--db", db, "blacklist", "sender", "add", "tata.fr", "--message", "domain"},
		{"db", "--db", db, "blacklist", "sender", "add", "spam@", "--message", "local part"},
		{"db", "--db", db, "blacklist", "sender", "add", "boss@corp.fr", "--message", "address"},
		{"db", "--db", db, "blacklist", "recipient", "add", "corp.fr", "--action", "REJECT no"},
	} {
		if r := run(t, "", args...); r.err != nil {
			t.Fatalf("%v: %v", args, r.err)
		}
	}
	comparePostmap := !testing.Short() && testlib.Have("/usr/sbin/postmap")
	if !comparePostmap && !testing.Short() && testlib.Required() {
		t.Fatal("/usr/sbin/postmap is missing and POSTKIT_E2E=1: run scripts/install-deps.sh")
	}
	os.WriteFile(filepath.Join(dir, "main.cf"), []byte("compatibility_level = 3.6\n"), 0o644)
	for _, m := range sqlmaps.Maps() {
		os.WriteFile(filepath.Join(dir, m.File), m.CF(db), 0o644)
	}
	type answer struct {
		Found   bool     `json:"found"`
		Value   string   `json:"value"`
		Matched string   `json:"matched_key"`
		Tried   []string `json:"tried"`
	}
	for _, tt := range []struct {
		m, key  string
		exact   bool
		want    answer
		wantErr string
	}{
		{"liste-noire-expediteurs", "Someone@Sub.Tata.fr", false, answer{true, "554 domain", "tata.fr", []string{"someone@sub.tata.fr", "sub.tata.fr", "tata.fr"}}, ""},
		{"liste-noire-expediteurs", "someone@sub.tata.fr", true, answer{false, "", "", []string{"someone@sub.tata.fr"}}, ""},
		{"liste-noire-expediteurs", "spam+x@ailleurs.org", false, answer{true, "554 local part", "spam@", []string{"spam+x@ailleurs.org", "spam@ailleurs.org", "ailleurs.org", "org", "spam+x@", "spam@"}}, ""},
		{"liste-noire-expediteurs", "boss+x@corp.fr", false, answer{true, "554 address", "boss@corp.fr", []string{"boss+x@corp.fr", "boss@corp.fr"}}, ""},
		{"liste-noire-expediteurs", "personne@ailleurs.org", false, answer{false, "", "", []string{"personne@ailleurs.org", "ailleurs.org", "org", "personne@"}}, ""},
		{"liste-noire-destinataires", "a@mx.corp.fr", false, answer{true, "REJECT no", "corp.fr", []string{"a@mx.corp.fr", "mx.corp.fr", "corp.fr"}}, ""},
	} {
		args := []string{"lookup", "--db", db, tt.m, tt.key, "--json"}
		if tt.exact {
			args = append(args, "--exact")
		}
		r := run(t, "", args...)
		var got answer
		if err := json.Unmarshal([]byte(r.out), &got); err != nil || r.err != nil {
			t.Errorf("lookup %s %s: %q %v %v", tt.m, tt.key, r.out, r.err, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) || (r.exit == 1) == tt.want.Found {
			t.Errorf("lookup %s %s = %+v exit %d; want %+v", tt.m, tt.key, got, r.exit, tt.want)
		}
		if !comparePostmap {
			continue
		}
		// Postfix's answer key by key: the first it finds is ours.
		m, _ := sqlmaps.MapByName(tt.m)
		first, firstKey := "", ""
		for _, k := range got.Tried {
			out, _ := exec.Command("/usr/sbin/postmap", "-c", dir, "-q", k, "sqlite:"+filepath.Join(dir, m.File)).Output()
			if v := strings.TrimSpace(string(out)); v != "" {
				first, firstKey = v, k
				break
			}
		}
		if first != got.Value || firstKey != got.Matched {
			t.Errorf("postmap over %v finds %q at %q; lookup %q at %q", got.Tried, first, firstKey, got.Value, got.Matched)
		}
	}
	// Text output: the value on stdout, the key that matched on stderr.
	r := run(t, "", "lookup", "--db", db, "liste-noire-expediteurs", "x@a.tata.fr")
	if r.out != "554 domain\n" || !strings.Contains(r.errOut, "matched key tata.fr") {
		t.Errorf("lookup text = %q / %q", r.out, r.errOut)
	}
	// Without parent matching (parent_domain_matches_subdomains without
	// smtpd_access_maps), only .tata.fr would match a sub-domain.
	keys := sqlmaps.AccessKeys("u@a.b.tata.fr", sqlmaps.AccessOptions{})
	if want := []string{"u@a.b.tata.fr", "a.b.tata.fr", ".b.tata.fr", ".tata.fr", ".fr", "u@"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("AccessKeys without parent matching = %v; want %v", keys, want)
	}
	cfg := filepath.Join(dir, "postkit.yaml")
	os.WriteFile(cfg, []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\ndatabase: {path: "+db+"}\npostfix:\n  main_cf: [{name: parent_domain_matches_subdomains, value: \"debug_peer_list\"}]\n"), 0o600)
	r = run(t, "", "lookup", "-c", cfg, "liste-noire-expediteurs", "x@a.tata.fr", "--json")
	if !strings.Contains(r.out, `"found":false`) || !strings.Contains(r.out, `".tata.fr"`) {
		t.Errorf("lookup with parent matching off = %q", r.out)
	}
	if keys := sqlmaps.AccessKeys("tata.fr", sqlmaps.AccessOptions{ParentMatches: true}); !reflect.DeepEqual(keys, []string{"tata.fr", "tata.fr@"}) {
		t.Errorf("AccessKeys of a bare name = %v", keys)
	}
	if keys := sqlmaps.AccessKeys("<>", sqlmaps.AccessOptions{NullKey: "<>"}); !reflect.DeepEqual(keys, []string{"<>"}) {
		t.Errorf("AccessKeys(<>) = %v", keys)
	}
}
