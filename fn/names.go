package fn

import (
	"crypto/sha256"
	"encoding/hex"
)

// maxName is the longest name we compose: 63 keeps every name valid as a
// label value and as a DNS label (Job names become pod label values).
const maxName = 63

// name joins base and suffix into a deterministic name of at most 63
// characters. A name that would be too long keeps a prefix of base and
// gains a hash of the whole, so two long bases never collide.
func name(base, suffix string) string {
	n := base + "-" + suffix
	if len(n) <= maxName {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	h := hex.EncodeToString(sum[:])[:8]
	keep := maxName - len(suffix) - len(h) - 2
	b := base[:keep]
	// A name must not have '-' or '.' just before the hash.
	for len(b) > 0 && (b[len(b)-1] == '-' || b[len(b)-1] == '.') {
		b = b[:len(b)-1]
	}
	return b + "-" + h + "-" + suffix
}
