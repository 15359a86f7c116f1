package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// postkit db quota: set, show (with the source of a user's limit), clear,
// in text and JSON; bad sizes and unknown targets are refused with what to
// do; mailbox.quota.default of the config is the fallback.
func TestDBQuota(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "postfix.sqlite")
	cfg := filepath.Join(dir, "postkit.yaml")
	os.WriteFile(cfg, []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\ndatabase: {path: "+db+"}\nmailbox: {quota: {default: 2G}}\n"), 0o644)
	for _, args := range [][]string{
		{"db", "-c", cfg, "init"},
		{"db", "-c", cfg, "user", "add", "test@exemple.fr", "--password-stdin"},
		{"db", "-c", cfg, "user", "add", "big@exemple.fr", "--password-stdin"},
	} {
		if r := run(t, "Secret-pw-123\n", args...); r.err != nil {
			t.Fatalf("%v: %v", args, r.err)
		}
	}
	tests := []struct {
		args    []string
		wantOut string
		wantErr string
	}{
		{[]string{"show", "test@exemple.fr"}, "test@exemple.fr  2G     default (mailbox.quota.default)", ""},
		{[]string{"set", "exemple.fr", "500M"}, "quota @exemple.fr: created (500M)", ""},
		{[]string{"set", "@exemple.fr", "500M", "--json"}, `{"changed":false,"object":"quota","key":"@exemple.fr","change":"unchanged","detail":"500M"}`, ""},
		{[]string{"show", "test@exemple.fr"}, "test@exemple.fr  500M   domain", ""},
		{[]string{"set", "big@exemple.fr", "1.5G"}, "quota big@exemple.fr: created (1536M)", ""},
		{[]string{"set", "big@exemple.fr", "2G"}, "quota big@exemple.fr: updated (1536M → 2G)", ""},
		{[]string{"show", "big@exemple.fr", "--json"}, `"source": "user"`, ""},
		{[]string{"show"}, "@exemple.fr     500M   524288000   yes\nbig@exemple.fr  2G", ""},
		{[]string{"show", "exemple.fr"}, "@exemple.fr  500M   domain", ""},
		{[]string{"clear", "big@exemple.fr"}, "quota big@exemple.fr: deleted", ""},
		{[]string{"clear", "big@exemple.fr", "--json"}, `"changed":false`, ""},
		{[]string{"set", "test@exemple.fr", "0"}, "created (0)", ""},
		{[]string{"show", "test@exemple.fr"}, "none", ""},
		{[]string{"set", "test@exemple.fr", "lots"}, "", `"lots": not a size`},
		{[]string{"set", "test@exemple.fr", "--", "-1G"}, "", "not a size"},
		{[]string{"set", "nobody@exemple.fr", "1G"}, "", "no user nobody@exemple.fr: add it first with 'postkit db user add nobody@exemple.fr'"},
		{[]string{"set", "toto.fr", "1G"}, "", "no domain toto.fr: add it first"},
		{[]string{"show", "nobody@exemple.fr"}, "", "nobody@exemple.fr"},
		{[]string{"set", "a b", "1G"}, "", "neither a user's address nor a domain"},
	}
	for _, tt := range tests {
		r := run(t, "", append([]string{"db", "-c", cfg, "quota"}, tt.args...)...)
		switch {
		case tt.wantErr == "" && r.err != nil:
			t.Errorf("quota %v: %v", tt.args, r.err)
		case tt.wantErr != "" && (r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr)):
			t.Errorf("quota %v: error %v; want %q", tt.args, r.err, tt.wantErr)
		case !strings.Contains(r.out, tt.wantOut):
			t.Errorf("quota %v printed:\n%s\nwant %q", tt.args, r.out, tt.wantOut)
		}
	}
	r := run(t, "", "db", "-c", cfg, "quota", "show", "--json")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(r.out), &rows); err != nil || len(rows) != 2 || rows[0]["target"] != "@exemple.fr" || rows[1]["bytes"] != 0.0 {
		t.Errorf("show --json = %s (%v)", r.out, err)
	}
}
