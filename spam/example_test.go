package spam_test

import (
	"context"
	"fmt"

	"github.com/postkit/postkit/spam"
	"github.com/postkit/postkit/spam/bayes"
)

func Example() {
	e, err := spam.New(spam.Config{Store: bayes.NewMemStore()}) // BayesPath: "/var/lib/postkit/bayes.sqlite"
	if err != nil {
		panic(err)
	}
	defer e.Close()
	raw := []byte("From: Ann <a@example.org>\r\nTo: b@example.net\r\nSubject: test\r\n" +
		"Date: Tue, 01 Dec 2026 10:00:00 +0100\r\nMessage-ID: <1@example.org>\r\n\r\n" +
		"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")
	res, err := e.Score(context.Background(), spam.Input{Raw: raw})
	if err != nil {
		panic(err) // or, for spam.ErrTimeout, deliver with res as it is
	}
	for _, f := range spam.Fields(res, spam.HeaderOptions{}) {
		fmt.Printf("%s: %s\n", f.Name, f.Value)
	}
	// Output:
	// X-Spam-Checker-Version: postkit-spam 1.0
	// X-Spam-Flag: YES
	// X-Spam-Level: **************************************************
	// X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE autolearn=no
	// 	version=postkit-spam-1.0
}
