package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// fieldOwner is the server-side-apply field manager of objects the harness
// writes, so they never collide with a controller under test.
const fieldOwner = client.FieldOwner("testbed")

// ApplyYAML server-side-applies every object of a multi-document YAML or
// JSON stream.
func (e *Env) ApplyYAML(ctx context.Context, data []byte) error {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := e.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), fieldOwner, client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
}

// InstallCRDs installs the CRDs found in these directories or files and
// waits until they are Established and served.
func (e *Env) InstallCRDs(t testing.TB, paths ...string) {
	t.Helper()
	_, err := envtest.InstallCRDs(e.Config, envtest.CRDInstallOptions{
		Paths:              paths,
		ErrorIfPathMissing: true,
		MaxTime:            time.Minute,
	})
	if err != nil {
		t.Fatalf("install CRDs from %v: %v", paths, err)
	}
}

// JobPodStage makes the pods of one Job end with this exit code and
// termination message, through a kwok Stage deleted when the test ends.
// Exit code 0 makes the pod Succeeded (the default stages already do that,
// but without a message); any other code makes it Failed. The Stage matches
// the Job's name label in its namespace and outweighs the default stages.
func (e *Env) JobPodStage(t testing.TB, namespace, job string, exitCode int32, message string) {
	t.Helper()
	phase, reason := "Failed", "Error"
	if exitCode == 0 {
		phase, reason = "Succeeded", "Completed"
	}
	// The message goes through the template as a Go string literal, which
	// kwok's Quote turns into a JSON (so YAML) string: no content of the
	// message can break the template or the YAML.
	stage := fmt.Sprintf(`apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: %s
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.namespace', operator: In, values: [%s]}
    - {key: '.metadata.labels["batch.kubernetes.io/job-name"]', operator: In, values: [%s]}
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.phase', operator: In, values: ['Running']}
  weight: 10000
  next:
    statusTemplate: |
      {{ $now := Now }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: %d
            reason: %s
            message: {{ %s | Quote }}
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      phase: %s
`, StageName(namespace, job), strconv.Quote(namespace), strconv.Quote(job), exitCode, reason,
		strconv.Quote(message), phase)
	ctx := context.Background()
	if err := e.ApplyYAML(ctx, []byte(stage)); err != nil {
		t.Fatalf("job pod stage: %v", err)
	}
	t.Cleanup(func() {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("kwok.x-k8s.io/v1alpha1")
		u.SetKind("Stage")
		u.SetName(StageName(namespace, job))
		_ = e.Client.Delete(context.Background(), u)
	})
}

// StageName is the name of the Stage JobPodStage creates.
func StageName(namespace, job string) string {
	return dnsLabel("job-"+namespace+"-"+job, 200)
}

// Eventually polls cond every 50 ms until it returns true or the timeout
// passes, then fails the test with the last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
