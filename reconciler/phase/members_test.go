package phase_test

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/reconciler/restart"
)

// The restart finds the voters where openbao-operator puts them during a
// blue/green upgrade (<cluster>-<blueRevision>) and the read replicas in
// <cluster>-read, and falls back to <cluster> when the blue revision's
// StatefulSet is not there.
func TestMembersFollowBlueGreenAndReadReplicas(t *testing.T) {
	t.Parallel()
	env := testbed.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	createCluster(t, env, ns)
	c := &unstructured.Unstructured{}
	c.SetAPIVersion("openbao.org/v1alpha1")
	c.SetKind("OpenBaoCluster")
	c.SetNamespace(ns)
	c.SetName("prod")
	if err := env.Client.Status().Patch(ctx, c, client.RawPatch("application/merge-patch+json",
		[]byte(`{"status":{"blueGreen":{"phase":"Idle","blueRevision":"b2"}}}`))); err != nil {
		t.Fatal(err)
	}
	env.OpenBaoPods(t, ns, "prod-b2", 3)
	env.OpenBaoPods(t, ns, "prod-read", 1)
	p, err := restart.NewProber(noHealth, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	g := restart.Gatherer{API: env.Client, Prober: p}

	m, watched, err := g.Members(ctx, ns, "prod", "b2", "http", nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Missing || m.StatefulSet != "prod-b2" || m.ReadReplicas != "prod-read" || m.Replicas != 4 || watched {
		t.Errorf("members %+v watched %v, want voters prod-b2, read replicas prod-read, 4 replicas, from the API", m, watched)
	}
	readReplicas := map[string]bool{}
	for _, mb := range m.Pods {
		readReplicas[mb.Name] = mb.ReadReplica
	}
	want := map[string]bool{"prod-b2-0": false, "prod-b2-1": false, "prod-b2-2": false, "prod-read-0": true}
	if len(readReplicas) != len(want) {
		t.Errorf("pods %v, want %v", readReplicas, want)
	}
	for name, rr := range want {
		if got, ok := readReplicas[name]; !ok || got != rr {
			t.Errorf("pod %s: found %v, read replica %v; want read replica %v", name, ok, got, rr)
		}
	}

	// No blue revision: the voters are in <cluster>, which does not exist
	// here; nor does a stale blue revision's StatefulSet.
	for _, rev := range []string{"", "b1"} {
		m, _, err := g.Members(ctx, ns, "prod", rev, "http", nil)
		if err != nil {
			t.Fatal(err)
		}
		if !m.Missing || m.StatefulSet != "prod" {
			t.Errorf("blue revision %q: members %+v, want the StatefulSet prod missing", rev, m)
		}
	}
}
