package provision

import (
	"fmt"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
)

// lookupUser returns the uid of name on this host, -1 if unknown.
func lookupUser(name string) int {
	u, err := user.Lookup(name)
	if err != nil {
		return -1
	}
	n, _ := strconv.Atoi(u.Uid)
	return n
}

// lookupGroup returns the gid of name on this host, -1 if unknown.
func lookupGroup(name string) int {
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1
	}
	n, _ := strconv.Atoi(g.Gid)
	return n
}

// account is a system account apply wants.
type account struct {
	name     string
	uid, gid int    // -1: any
	home     string // "" none
	extra    string // supplementary group, "" none
}

// accounts creates the mailbox owner and the daemons' account on the live
// system; under another root it only reports them.
func (r *run) accounts(s *Step) error {
	want := []account{{name: r.cfg.Mailbox.User, uid: r.cfg.Mailbox.UID, gid: r.cfg.Mailbox.GID, home: r.cfg.Mailbox.BaseDir}}
	if a := Account(r.cfg); a != "root" && a != r.cfg.Mailbox.User {
		extra := ""
		if lookupGroup(r.cfg.Postfix.MailOwner) >= 0 {
			extra = r.cfg.Postfix.MailOwner
		}
		want = append(want, account{name: a, uid: -1, gid: -1, extra: extra})
	}
	for _, a := range want {
		if !r.live {
			s.add(false, "user and group %s%s: not created under --root %s (create them on the host the tree is for)", a.name, ids(a), r.o.Root)
			continue
		}
		if err := r.ensureAccount(s, a); err != nil {
			return err
		}
	}
	return nil
}

func ids(a account) string {
	if a.uid < 0 {
		return " (system)"
	}
	return fmt.Sprintf(" (uid %d, gid %d)", a.uid, a.gid)
}

func (r *run) ensureAccount(s *Step, a account) error {
	gid := lookupGroup(a.name)
	switch {
	case gid >= 0 && a.gid >= 0 && gid != a.gid:
		return fmt.Errorf("apply: group %s exists with gid %d, postkit.yaml says %d: set mailbox.gid: %d, or change the group (groupmod -g %d %s)", a.name, gid, a.gid, gid, a.gid, a.name)
	case gid < 0 && r.o.Check:
		s.add(true, "would create group %s%s", a.name, ids(a))
	case gid < 0:
		args := []string{"--system"}
		if a.gid >= 0 {
			args = append(args, "--gid", strconv.Itoa(a.gid))
		}
		if err := command(s, "groupadd", append(args, a.name)...); err != nil && lookupGroup(a.name) < 0 {
			return err
		}
		s.add(true, "created group %s", a.name)
	}
	uid := lookupUser(a.name)
	switch {
	case uid >= 0 && a.uid >= 0 && uid != a.uid:
		return fmt.Errorf("apply: user %s exists with uid %d, postkit.yaml says %d: set mailbox.uid: %d, or change the user (usermod -u %d %s)", a.name, uid, a.uid, uid, a.uid, a.name)
	case uid < 0 && r.o.Check:
		s.add(true, "would create user %s%s", a.name, ids(a))
	case uid < 0:
		home := a.home
		if home == "" {
			home = "/nonexistent"
		}
		args := []string{"--system", "--gid", a.name, "--home-dir", home, "--no-create-home", "--shell", "/usr/sbin/nologin"}
		if a.uid >= 0 {
			args = append(args, "--uid", strconv.Itoa(a.uid))
		}
		if a.extra != "" {
			args = append(args, "--groups", a.extra)
		}
		if err := command(s, "useradd", append(args, a.name)...); err != nil && lookupUser(a.name) < 0 {
			return err
		}
		s.add(true, "created user %s", a.name)
	case a.extra != "" && !inGroup(a.name, a.extra):
		if r.o.Check {
			s.add(true, "would add %s to group %s", a.name, a.extra)
			return nil
		}
		if err := command(s, "usermod", "--append", "--groups", a.extra, a.name); err != nil {
			return err
		}
		s.add(true, "added %s to group %s", a.name, a.extra)
	}
	return nil
}

func inGroup(name, group string) bool {
	u, err := user.Lookup(name)
	if err != nil {
		return false
	}
	gids, _ := u.GroupIds()
	g, err := user.LookupGroup(group)
	if err != nil {
		return false
	}
	for _, id := range gids {
		if id == g.Gid {
			return true
		}
	}
	return false
}

// command runs a system command; its failure names it and its output.
func command(_ *Step, name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("apply: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
