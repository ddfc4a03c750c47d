// Package contract checks that the parts agree: the Job the function
// composes configures the executor completely, for every provider and auth
// method.
package contract

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/crossplane/function-sdk-go/logging"
	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"

	"github.com/openbao-restore/openbao-restore/executor"
	"github.com/openbao-restore/openbao-restore/fn"
	"github.com/openbao-restore/openbao-restore/internal/testca"
	"github.com/openbao-restore/openbao-restore/schemas"
)

func composeJob(t *testing.T, spec map[string]any, tls bool) *batchv1.Job {
	t.Helper()
	xr, err := structpb.NewStruct(map[string]any{
		"apiVersion": "restore.openbao-restore.io/v1alpha1", "kind": "XOpenBaoRestore",
		"metadata": map[string]any{"name": "r-x1", "uid": "u1"},
		"spec":     spec,
	})
	if err != nil {
		t.Fatal(err)
	}
	cluster, _ := structpb.NewStruct(map[string]any{
		"apiVersion": "openbao.org/v1alpha1", "kind": "OpenBaoCluster", "metadata": map[string]any{"name": "prod", "namespace": "vault"},
		"spec": map[string]any{"replicas": 3, "tls": map[string]any{"enabled": tls}},
	})
	lock, _ := structpb.NewStruct(map[string]any{"status": map[string]any{"state": schemas.LockHeld, "heldBy": schemas.Holder("r", "u1")}})
	rsp, err := (&fn.Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), &fnv1.RunFunctionRequest{
		Observed: &fnv1.State{
			Composite: &fnv1.Resource{Resource: xr},
			Resources: map[string]*fnv1.Resource{"lock": {Resource: lock}},
		},
		RequiredResources: map[string]*fnv1.Resources{"cluster": {Items: []*fnv1.Resource{{Resource: cluster}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	j, ok := rsp.GetDesired().GetResources()["job"]
	if !ok {
		t.Fatalf("no Job composed: %v %v", rsp.GetResults(), rsp.GetConditions())
	}
	job := &batchv1.Job{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(j.GetResource().AsMap(), job); err != nil {
		t.Fatal(err)
	}
	return job
}

// mount materialises the Job's volumes the way the kubelet would, with
// stand-in contents, and returns the executor's paths into them.
func mount(t *testing.T, job *batchv1.Job) (executor.Paths, map[string]string) {
	t.Helper()
	root := t.TempDir()
	c := job.Spec.Template.Spec.Containers[0]
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		mounts[m.MountPath] = dir
	}
	write := func(mountPath, name, content string) {
		if d, ok := mounts[mountPath]; ok {
			if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o400); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(schemas.MountToken, "token", "s.token")
	write(schemas.MountJWT, "openbao-token", "jwt")
	write(schemas.MountCredentials, schemas.KeyAccessKeyID, "AKIA")
	write(schemas.MountCredentials, schemas.KeySecretAccessKey, "secret")
	write(schemas.MountCredentials, schemas.KeyGCSCredentials, `{"type":"service_account"}`)
	write(schemas.MountCredentials, schemas.KeyAzureAccountKey, "a2V5")
	write(schemas.MountKubeToken, "token", "k8s")
	write(schemas.MountKubeToken, "namespace", "vault")
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			env[e.Name] = "from-" + e.ValueFrom.FieldRef.FieldPath
		default:
			env[e.Name] = e.Value
		}
	}
	// Env paths are absolute pod paths: point them into the temp root.
	for k, v := range env {
		if strings.HasPrefix(v, "/") && (strings.HasSuffix(k, "_PATH") || strings.HasSuffix(k, "_FILE")) {
			env[k] = filepath.Join(root, v)
		}
	}
	return executor.Paths{
		TokenFile:      filepath.Join(root, schemas.FileToken),
		JWTFile:        filepath.Join(root, schemas.FileJWT),
		CredentialsDir: filepath.Join(root, schemas.MountCredentials),
		Termination:    filepath.Join(root, "termination-log"),
		KubeDir:        filepath.Join(root, schemas.MountKubeToken),
	}, env
}

func TestComposedJobConfiguresTheExecutor(t *testing.T) {
	base := func(target map[string]any, auth map[string]any) map[string]any {
		s := map[string]any{
			"claimRef": map[string]any{"namespace": "vault", "name": "r"},
			"cluster":  "prod",
			"source": map[string]any{"key": "clusters/prod/a.snap", "expectedDigest": "sha256:" + strings.Repeat("ab", 32),
				"expectedSize": 4096, "target": target},
		}
		for k, v := range auth {
			s[k] = v
		}
		return s
	}
	creds := map[string]any{"name": "store"}
	cases := map[string]struct {
		spec map[string]any
		tls  bool
		want func(c *executor.Config) string
	}{
		"s3 with token": {
			spec: base(map[string]any{"bucket": "b", "endpoint": "https://s3.example.com", "region": "eu-west-1", "usePathStyle": true, "credentialsSecretRef": creds},
				map[string]any{"tokenSecretRef": map[string]any{"name": "tok"}}),
			want: func(c *executor.Config) string {
				if c.Provider != "s3" || c.Region != "eu-west-1" || !c.UsePathStyle || c.AuthMethod != "token" || c.Key != "clusters/prod/a.snap" ||
					c.ExpectedSize != 4096 || c.ExpectedDigest != strings.Repeat("ab", 32) || c.Force || c.LockRequestName == "" || c.Replicas != 3 {
					return "s3/token settings"
				}
				return ""
			},
		},
		"gcs with jwt and tls": {
			spec: base(map[string]any{"provider": "gcs", "bucket": "b", "gcs": map[string]any{"project": "p"}, "credentialsSecretRef": creds},
				map[string]any{"jwtAuthRole": "restore"}),
			tls: true,
			want: func(c *executor.Config) string {
				if c.Provider != "gcs" || c.GCSProject != "p" || c.AuthMethod != "jwt" || c.JWTRole != "restore" || c.TLSServerName == "" {
					return "gcs/jwt settings"
				}
				return ""
			},
		},
		"azure with force": {
			spec: func() map[string]any {
				s := base(map[string]any{"provider": "azure", "bucket": "c", "azure": map[string]any{"storageAccount": "acct"}, "credentialsSecretRef": creds},
					map[string]any{"tokenSecretRef": map[string]any{"name": "tok"}})
				s["force"] = true
				return s
			}(),
			want: func(c *executor.Config) string {
				if c.Provider != "azure" || c.AzureAccount != "acct" || c.AzureContainer != "c" || !c.Force || c.RestoreEndpoint() != "snapshot-force" {
					return "azure/force settings"
				}
				return ""
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			job := composeJob(t, tc.spec, tc.tls)
			paths, env := mount(t, job)
			if tc.tls {
				// The CA the Job mounts from the cluster's -tls-ca Secret.
				ca := env[schemas.EnvTLSCAPath]
				if err := os.WriteFile(ca, testca.New(t).PEM, 0o400); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := executor.LoadConfig(func(k string) string { return env[k] }, paths)
			if err != nil {
				t.Fatalf("the composed Job does not configure the executor: %v\nenv: %v", err, env)
			}
			if bad := tc.want(cfg); bad != "" {
				t.Errorf("%s not carried through: %+v", bad, cfg)
			}
		})
	}
}
