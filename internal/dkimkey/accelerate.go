//go:build !openssl || !cgo

package dkimkey

import "crypto"

// Accelerate returns a signer that produces the same signatures as s, faster
// when possible. This build has no accelerated implementation: it returns s.
// Building with `-tags openssl` (cgo, libssl-dev) signs RSA with libcrypto.
func Accelerate(s crypto.Signer) crypto.Signer { return s }

// Accelerated reports whether Accelerate uses libcrypto in this build.
const Accelerated = false
