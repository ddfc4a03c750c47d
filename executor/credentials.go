package executor

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// loadCredentials reads the storage credentials Secret's files. Which keys
// are required depends on the provider; with a web identity (roleArn) or
// workload identity, S3 and GCS need none.
func (c *Config) loadCredentials(dir string, bad func(string, ...any)) error {
	read := func(key string) Secret {
		s, err := readSecretFile(filepath.Join(dir, key))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			bad("credentials file %s: %v", filepath.Join(dir, key), err)
		}
		return s
	}
	cr := &c.Creds
	switch c.Provider {
	case "s3":
		cr.AccessKeyID = read(schemas.KeyAccessKeyID)
		cr.SecretAccessKey = read(schemas.KeySecretAccessKey)
		cr.SessionToken = read(schemas.KeySessionToken)
		cr.Region = read(schemas.KeyRegion).reveal()
		if ca := read(schemas.KeyCACert); !ca.empty() {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(ca.bytesValue()) {
				bad("credentials file %s holds no PEM certificate", filepath.Join(dir, schemas.KeyCACert))
			}
			cr.CACert = ca.bytesValue()
		}
		if c.Region == "" {
			c.Region = cr.Region
		}
		if c.Region == "" {
			c.Region = "us-east-1"
		}
		if c.RoleARN != "" {
			if c.WebIdentityFile == "" {
				bad("%s needs %s", schemas.EnvAWSRoleARN, schemas.EnvAWSWebIdentityFile)
			} else if _, err := readSecretFile(c.WebIdentityFile); err != nil {
				bad("%s %s: %v", schemas.EnvAWSWebIdentityFile, c.WebIdentityFile, err)
			}
		} else if cr.AccessKeyID.empty() != cr.SecretAccessKey.empty() {
			bad("credentials files %s and %s must both be present", filepath.Join(dir, schemas.KeyAccessKeyID), filepath.Join(dir, schemas.KeySecretAccessKey))
		}
	case "gcs":
		cr.GCSJSON = read(schemas.KeyGCSCredentials)
	case "azure":
		cr.AzureAccountKey = read(schemas.KeyAzureAccountKey)
		cr.AzureConnString = read(schemas.KeyAzureConnString)
		if cr.AzureAccountKey.empty() && cr.AzureConnString.empty() {
			bad("credentials file %s or %s is required for azure", filepath.Join(dir, schemas.KeyAzureAccountKey), filepath.Join(dir, schemas.KeyAzureConnString))
		}
		if !cr.AzureAccountKey.empty() && c.AzureAccount == "" {
			bad("%s is required with an account key", schemas.EnvAzureAccount)
		}
	}
	return nil
}

// withScheme adds https:// to a bare host, the form bao-backup accepts.
func withScheme(s string) string {
	if strings.Contains(s, "://") {
		return s
	}
	return "https://" + s
}
