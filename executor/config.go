package executor

import (
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// DefaultAnswerTimeout is schemas.EnvAnswerTimeout's default, well under the Job's
// default activeDeadlineSeconds (2400 s): the executor ends the stall
// itself and says so. A very large snapshot on slow disks may need more.
const DefaultAnswerTimeout = 5 * time.Minute

// Paths are the files the executor reads. The defaults are the pod's mounts
// (schemas.Mount*); tests point them at temporary files.
type Paths struct {
	TokenFile      string // static OpenBao token
	JWTFile        string // projected ServiceAccount token for JWT login
	CredentialsDir string // the storage credentials Secret, one file per key
	Termination    string // where the JSON termination message goes
	KubeDir        string // in-cluster API token, CA and namespace
}

// DefaultPaths are the restore pod's mount points.
func DefaultPaths() Paths {
	return Paths{
		TokenFile:      schemas.FileToken,
		JWTFile:        schemas.FileJWT,
		CredentialsDir: schemas.MountCredentials,
		Termination:    "/dev/termination-log",
		KubeDir:        schemas.MountKubeToken,
	}
}

// Credentials are the storage credentials Secret's keys that were mounted.
type Credentials struct {
	AccessKeyID     Secret
	SecretAccessKey Secret
	SessionToken    Secret
	Region          string
	CACert          []byte // PEM, for an S3 endpoint with a private CA
	GCSJSON         Secret
	AzureAccountKey Secret
	AzureConnString Secret
}

// Config is everything the executor needs, read once at start from the
// environment contract (bao-backup's restore mode plus our pins) and the
// mounted files. A Config that loads is complete: no step later fails on a
// missing setting.
type Config struct {
	ClusterName string
	StatefulSet string
	Namespace   string
	Replicas    int

	Provider           string // s3, gcs or azure
	Endpoint           string
	Bucket             string
	Key                string // the full object path of the snapshot
	PathPrefix         string
	Region             string
	UsePathStyle       bool
	InsecureSkipVerify bool
	GCSProject         string
	AzureAccount       string
	AzureContainer     string
	RoleARN            string
	WebIdentityFile    string
	Creds              Credentials

	Force bool
	// Mode is schemas.ModeRestore, ModeStepDown or ModeReadCheck;
	// StepDownPod is the leader a step-down asks (schemas.EnvStepDownPod),
	// ReadPaths the paths a read check reads (schemas.EnvReadPaths).
	Mode, StepDownPod string
	ReadPaths         []string
	// DryRun runs every check and sends nothing (schemas.EnvDryRun).
	DryRun bool
	// SafetySnapshot is Required, BestEffort or Off (schemas.EnvSafetySnapshot).
	SafetySnapshot string
	// Newest: no key; restore the newest object under the path prefix
	// (schemas.EnvNewestUnderPrefix).
	Newest bool
	// FreshTarget: the cluster is new (schemas.EnvFreshTarget), so its
	// identity must not be the snapshot's yet, and must be after.
	FreshTarget bool

	AuthMethod string // jwt or token
	JWTRole    string
	Token      Secret
	JWT        Secret

	OpenBaoAddr   string // direct address; skips replica discovery
	TLSServerName string
	TLSCAPath     string
	TLSCA         *x509.CertPool
	TLSCAPEM      []byte // TLSCA as read, recorded with the submission

	RequestName     string
	RequestUID      string
	PodName         string
	PodUID          string
	LockRequestName string

	ExpectedDigest    string // lower-case hex, without "sha256:"
	ExpectedSize      int64  // 0 = not pinned
	ExpectedClusterID string
	ExpectedVersion   string

	// AnswerTimeout bounds the wait for the restore's answer after the
	// whole body was sent (schemas.EnvAnswerTimeout).
	AnswerTimeout time.Duration
}

// Endpoint returns "snapshot" or "snapshot-force", the only two restore
// endpoints; force is the single switch between them.
func (c *Config) RestoreEndpoint() string {
	if c.Force {
		return "snapshot-force"
	}
	return "snapshot"
}

// LoadConfig reads the environment and the files in p. Every failure is
// ExitConfig and names the variable or file at fault (never its value when
// it is a secret).
func LoadConfig(env func(string) string, p Paths) (*Config, error) {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	get := func(k string) string { return strings.TrimSpace(env(k)) }
	// first returns the first non-empty variable: RESTORE_* overrides BACKUP_*,
	// as in bao-backup's restore mode.
	first := func(keys ...string) (string, string) {
		for _, k := range keys {
			if v := get(k); v != "" {
				return v, k
			}
		}
		return "", keys[0]
	}
	boolean := func(k string, def bool) bool {
		v := get(k)
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("%s=%q is not a boolean (true or false)", k, v)
		}
		return b
	}

	c := &Config{Mode: schemas.ModeRestore}
	switch m := get(schemas.EnvExecutorMode); m {
	case "", schemas.ModeRestore:
	case schemas.ModeStepDown:
		c.Mode = m
		if c.StepDownPod = get(schemas.EnvStepDownPod); c.StepDownPod == "" {
			bad("%s is required with %s=%s: the leader's pod", schemas.EnvStepDownPod, schemas.EnvExecutorMode, m)
		}
	case schemas.ModeReadCheck:
		c.Mode = m
		for _, p := range strings.Split(get(schemas.EnvReadPaths), ",") {
			if p = strings.Trim(strings.TrimSpace(p), "/"); p != "" {
				c.ReadPaths = append(c.ReadPaths, p)
			}
		}
		if len(c.ReadPaths) == 0 {
			bad("%s is required with %s=%s: the paths to read", schemas.EnvReadPaths, schemas.EnvExecutorMode, m)
		}
	default:
		bad("%s=%q: want %q, %q or %q", schemas.EnvExecutorMode, m, schemas.ModeRestore, schemas.ModeStepDown, schemas.ModeReadCheck)
	}
	// A step-down reads no snapshot: no store settings or credentials.
	store := c.Mode == schemas.ModeRestore
	c.ClusterName = get(schemas.EnvClusterName)
	c.StatefulSet = get(schemas.EnvStatefulSetName)
	if c.StatefulSet == "" {
		c.StatefulSet = c.ClusterName
	}
	c.Namespace = get(schemas.EnvClusterNamespace)
	if v := get(schemas.EnvClusterReplicas); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 99 {
			bad("%s=%q is not a replica count (1..99)", schemas.EnvClusterReplicas, v)
		}
		c.Replicas = n
	}

	c.Provider = strings.ToLower(get(schemas.EnvProvider))
	if c.Provider == "" {
		c.Provider = "s3"
	}
	switch c.Provider {
	case "s3", "gcs", "azure":
	default:
		bad("%s=%q is not a provider (s3, gcs or azure)", schemas.EnvProvider, c.Provider)
	}
	var k string
	c.Endpoint, k = first(schemas.EnvRestoreEndpoint, schemas.EnvEndpoint)
	if c.Endpoint != "" {
		if u, err := url.Parse(withScheme(c.Endpoint)); err != nil || u.Host == "" {
			bad("%s=%q is not a URL or host", k, c.Endpoint)
		}
	}
	c.Bucket, _ = first(schemas.EnvRestoreBucket, schemas.EnvBucket)
	c.Key = strings.TrimPrefix(get(schemas.EnvRestoreKey), "/")
	c.PathPrefix = strings.TrimPrefix(get(schemas.EnvPathPrefix), "/")
	c.Region, _ = first(schemas.EnvRestoreRegion, schemas.EnvRegion)
	if get(schemas.EnvRestoreUsePathStyle) != "" {
		c.UsePathStyle = boolean(schemas.EnvRestoreUsePathStyle, false)
	} else {
		c.UsePathStyle = boolean(schemas.EnvUsePathStyle, false)
	}
	c.InsecureSkipVerify = boolean(schemas.EnvInsecureSkipVerify, false)
	c.GCSProject = get(schemas.EnvGCSProject)
	c.AzureAccount = get(schemas.EnvAzureAccount)
	c.AzureContainer = get(schemas.EnvAzureContainer)
	if c.AzureContainer == "" {
		c.AzureContainer = c.Bucket
	}
	c.RoleARN = get(schemas.EnvAWSRoleARN)
	c.WebIdentityFile = get(schemas.EnvAWSWebIdentityFile)
	c.Force = boolean(schemas.EnvRestoreForce, false)
	c.DryRun = boolean(schemas.EnvDryRun, false)
	c.FreshTarget = boolean(schemas.EnvFreshTarget, false)
	if c.FreshTarget && !c.Force {
		bad("%s=true needs %s=true: a new cluster takes the snapshot's identity only through snapshot-force", schemas.EnvFreshTarget, schemas.EnvRestoreForce)
	}
	switch v := get(schemas.EnvSafetySnapshot); v {
	case "", schemas.SafetyOff:
		c.SafetySnapshot = schemas.SafetyOff
	case schemas.SafetyRequired, schemas.SafetyBestEffort:
		c.SafetySnapshot = v
	default:
		bad("%s=%q is not %s, %s or %s", schemas.EnvSafetySnapshot, v, schemas.SafetyRequired, schemas.SafetyBestEffort, schemas.SafetyOff)
	}
	c.Newest = boolean(schemas.EnvNewestUnderPrefix, false)
	switch {
	case c.Newest && c.Key != "":
		bad("%s=true and %s are exclusive: the key names the snapshot, the other chooses the newest", schemas.EnvNewestUnderPrefix, schemas.EnvRestoreKey)
	case c.Newest && strings.Trim(c.PathPrefix, "/") == "":
		bad("%s=true needs %s: the newest object of a whole bucket is no snapshot to trust", schemas.EnvNewestUnderPrefix, schemas.EnvPathPrefix)
	case c.Key == "" && store && !c.Newest:
		bad("%s is required: the full object path of the snapshot", schemas.EnvRestoreKey)
	}
	if c.Bucket == "" && c.Provider != "azure" && store {
		bad("%s (or %s) is required", schemas.EnvBucket, schemas.EnvRestoreBucket)
	}
	if c.Provider == "azure" && c.AzureContainer == "" && store {
		bad("%s (or %s) is required", schemas.EnvAzureContainer, schemas.EnvBucket)
	}

	c.OpenBaoAddr = strings.TrimRight(get(schemas.EnvOpenBaoAddr), "/")
	if c.OpenBaoAddr != "" {
		if u, err := url.Parse(c.OpenBaoAddr); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			bad("%s=%q is not an http(s) URL", schemas.EnvOpenBaoAddr, c.OpenBaoAddr)
		}
	} else {
		if c.StatefulSet == "" {
			bad("%s or %s is required to find the cluster's pods (or set %s)", schemas.EnvStatefulSetName, schemas.EnvClusterName, schemas.EnvOpenBaoAddr)
		}
		if c.Namespace == "" {
			bad("%s is required to find the cluster's pods (or set %s)", schemas.EnvClusterNamespace, schemas.EnvOpenBaoAddr)
		}
		if c.Replicas == 0 {
			bad("%s is required to find the cluster's pods (or set %s)", schemas.EnvClusterReplicas, schemas.EnvOpenBaoAddr)
		}
	}
	c.TLSServerName = get(schemas.EnvTLSServerName)
	c.TLSCAPath = get(schemas.EnvTLSCAPath)
	if c.TLSCAPath != "" {
		pool, pem, err := loadCA(c.TLSCAPath)
		if err != nil {
			bad("%s: %v", schemas.EnvTLSCAPath, err)
		}
		c.TLSCA, c.TLSCAPEM = pool, pem
	}

	c.AuthMethod = strings.ToLower(get(schemas.EnvAuthMethod))
	c.JWTRole = get(schemas.EnvJWTAuthRole)
	if c.AuthMethod == "" {
		c.AuthMethod = "token"
		if c.JWTRole != "" {
			c.AuthMethod = "jwt"
		}
	}
	switch c.AuthMethod {
	case "token":
		t, err := readSecretFile(p.TokenFile)
		if err != nil {
			bad("token file %s: %v", p.TokenFile, err)
		}
		c.Token = t
	case "jwt":
		if c.JWTRole == "" {
			bad("%s is required with %s=jwt", schemas.EnvJWTAuthRole, schemas.EnvAuthMethod)
		}
		t, err := readSecretFile(p.JWTFile)
		if err != nil {
			bad("JWT file %s: %v", p.JWTFile, err)
		}
		c.JWT = t
	default:
		bad("%s=%q is not an auth method (jwt or token)", schemas.EnvAuthMethod, c.AuthMethod)
	}

	c.RequestName = get(schemas.EnvRestoreRequestName)
	c.RequestUID = get(schemas.EnvRestoreRequestUID)
	c.PodName = get(schemas.EnvPodName)
	c.PodUID = get(schemas.EnvPodUID)
	c.LockRequestName = get(schemas.EnvLockRequestName)

	if v := get(schemas.EnvExpectedDigest); v != "" {
		h := strings.ToLower(strings.TrimPrefix(v, "sha256:"))
		if b, err := hex.DecodeString(h); err != nil || len(b) != 32 || !strings.HasPrefix(v, "sha256:") {
			bad("%s=%q is not sha256:<64 hex digits>", schemas.EnvExpectedDigest, v)
		}
		c.ExpectedDigest = h
	}
	if v := get(schemas.EnvExpectedSize); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > schemas.MaxSnapshotSize {
			bad("%s=%q is not a size in bytes (1..%d)", schemas.EnvExpectedSize, v, int64(schemas.MaxSnapshotSize))
		}
		c.ExpectedSize = n
	}
	c.ExpectedClusterID = get(schemas.EnvExpectedClusterID)
	c.ExpectedVersion = get(schemas.EnvExpectedVersion)
	c.AnswerTimeout = DefaultAnswerTimeout
	if v := get(schemas.EnvAnswerTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if n, nerr := strconv.Atoi(v); nerr == nil {
			d, err = time.Duration(n)*time.Second, nil // whole seconds, as Kubernetes fields count them
		}
		if err != nil || d <= 0 {
			bad("%s=%q is not a positive duration (e.g. 5m, 300s or 300)", schemas.EnvAnswerTimeout, v)
		}
		c.AnswerTimeout = d
	}

	if store {
		if err := c.loadCredentials(p.CredentialsDir, bad); err != nil {
			return nil, err
		}
	}
	if len(errs) > 0 {
		return nil, fail(schemas.ExitConfig, nil, "invalid configuration: %s", strings.Join(errs, "; "))
	}
	return c, nil
}
