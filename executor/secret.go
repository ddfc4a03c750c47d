package executor

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Secret holds a credential. Its String, GoString and MarshalJSON never show
// the value, so a Config printed by mistake (%v, %+v, JSON) leaks nothing.
type Secret string

func (Secret) String() string               { return "[redacted]" }
func (Secret) GoString() string             { return "[redacted]" }
func (Secret) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte("[redacted]")) }
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }
func (s Secret) reveal() string             { return string(s) }
func (s Secret) empty() bool                { return len(s) == 0 }
func (s Secret) bytesValue() []byte         { return []byte(s) }

// readSecretFile reads a mounted secret file, trimming the trailing newline
// that editors and `kubectl create secret --from-file` leave. An empty file
// is an error: a mounted but empty credential is always a mistake.
func readSecretFile(path string) (Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("not found: %w", fs.ErrNotExist)
		}
		return "", errors.New("cannot be read")
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", errors.New("is empty")
	}
	return Secret(s), nil
}

// loadCA reads a PEM CA bundle, or the first of ca.crt/ca.pem/tls.crt when
// the path is the mounted directory.
func loadCA(path string) (*x509.CertPool, []byte, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		for _, n := range []string{"ca.crt", "ca.pem", "tls.crt"} {
			if _, err := os.Stat(filepath.Join(path, n)); err == nil {
				path = filepath.Join(path, n)
				break
			}
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("CA file %s cannot be read", path)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return pool, b, nil
}
