package config_test

import (
	"fmt"

	"github.com/postkit/postkit/internal/config"
)

// --set changes a key of postkit.yaml; the override is validated as the
// file is, and an error names it as typed.
func ExampleParseSet() {
	yaml := []byte("hostname: mail.example.org\ndomains: [example.org]\n")
	for _, arg := range []string{"policy.checks+=greylist", "policy.greylist.delay=10x", "policy.greylst.delay=10m"} {
		o, err := config.ParseSet(arg)
		if err != nil {
			fmt.Println(err)
			continue
		}
		c, _, err := config.Parse("postkit.yaml", yaml, o)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(c.Policy.Checks)
	}
	// Output:
	// [blacklist spf greylist]
	// --set policy.greylist.delay=10x: policy.greylist.delay: "10x" is not a duration (write a duration like 300s, 5m or 24h)
	// --set policy.greylst.delay=10m: policy.greylst: unknown key "greylst" (did you mean "greylist"?)
}

// A daemon's flags are shorthands for keys; without -c the daemon starts
// from its built-in document.
func ExampleShorthands() {
	args := map[string][]string{"ratelimit": {"sasl_username:recipients=500/1h"}, "checks": {"spf,ratelimit"}}
	given := func(flag string) ([]string, bool) { v, ok := args[flag]; return v, ok }
	ovs, err := config.FlagOverrides(config.Shorthands("policyd"), given)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, o := range ovs {
		fmt.Printf("%s\t%s\n", o.Source, o)
	}
	c, _, err := config.LoadDaemon("", "policyd", ovs...)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Policy.Checks, c.Policy.RateLimit.Limits[0].Window.D())

	args = map[string][]string{"ratelimit": {"foo"}}
	_, err = config.FlagOverrides(config.Shorthands("policyd"), given)
	fmt.Println(err)
	// Output:
	// --checks spf,ratelimit	policy.checks=[spf, ratelimit]
	// --ratelimit sasl_username:recipients=500/1h	policy.ratelimit.limits=[{key: sasl_user, count: recipients, max: 500, window: 1h}]
	// [spf ratelimit] 1h0m0s
	// --ratelimit foo: policy.ratelimit.limits: "foo" is not KEY:COUNTER=MAX/WINDOW (e.g. sasl_user:recipients=500/1h; KEY is sasl_user, sender or client_ip, COUNTER messages or recipients)
}
