package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
)

const (
	// crossplaneVersion is the core under test (hack/tools/crossplane-core).
	crossplaneVersion = "v2.4.0"
	xpNamespace       = "crossplane-system"
	pkgVersion        = "v0.1.0"
	// Crossplane names a dependency after its repository path
	// (<org>-<repo>); the Composition's functionRef and the install
	// manifest's Provider rely on these names.
	functionName   = "openbao-restore-function-openbao-restore"
	providerName   = "openbao-restore-reconciler-openbao-restore"
	configName     = "configuration-openbao-restore"
	reconcilerSA   = "openbao-restore-reconciler"
	xrdName        = "xopenbaorestores.restore.openbao-restore.io"
	upstreamPrefix = "ghcr.io/openbao-restore/"
)

// Stack is a control plane with Crossplane core, the loopback registry, our
// packages installed from it and the harness acting as their runtime.
type Stack struct {
	*testbed.Env
	Dir      string
	Registry string // host:port of the loopback OCI registry
	Bin      string // our binary (function, reconciler and executor)
	Began    time.Time
	// Metrics is the reconciler's Prometheus endpoint.
	Metrics string
}

var (
	gvkFunctionRevision = schema.GroupVersionKind{Group: "pkg.crossplane.io", Version: "v1", Kind: "FunctionRevision"}
	gvkProviderRevision = schema.GroupVersionKind{Group: "pkg.crossplane.io", Version: "v1", Kind: "ProviderRevision"}
)

// modDir is Crossplane's module in the module cache (the tools module
// downloaded it when hack/tool.sh built core).
func modDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	d := filepath.Join(strings.TrimSpace(string(out)), "github.com", "crossplane", "crossplane", "v2@"+crossplaneVersion)
	if _, err := os.Stat(d); err != nil {
		// The binary is cached but the module cache was cleaned: fetch
		// the module through the tools module that pins it.
		dl := exec.Command("go", "mod", "download", "github.com/crossplane/crossplane/v2")
		dl.Dir = filepath.Join(testbin.Root(), "hack", "tools", "crossplane-core")
		if out, err := dl.CombinedOutput(); err != nil {
			t.Fatalf("go mod download crossplane %s: %v\n%s", crossplaneVersion, err, out)
		}
	}
	return d
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// StartStack brings everything up: the control plane, Crossplane core, the
// registry, our packages pushed and installed through one
// `crossplane xpkg install configuration`, the function served in-process
// and the reconciler's revision made healthy. It returns once the
// Configuration, Function and Provider are Healthy and the XRD is
// Established.
//
// noKwok leaves kwok out: every pod then runs under the harness kubelet
// the test starts (real executor, real OpenBao pods).
func StartStack(t testing.TB, noKwok bool) *Stack {
	t.Helper()
	// Build (or find) every tool before the clock starts.
	core := testbin.Path(t, "crossplane-core")
	crank := testbin.Path(t, "crossplane")
	registry := testbin.Path(t, "registry")
	mod := modDir(t)
	// The image's two binaries: the product, and beside it the executor
	// alone, which the product execs for a restore.
	bin := filepath.Join(t.TempDir(), "openbao-restore")
	for pkg, out := range map[string]string{".": bin, "./cmd/openbao-restore-executor": filepath.Join(filepath.Dir(bin), "openbao-restore-executor")} {
		build := exec.Command("go", "build", "-o", out, pkg)
		build.Dir = testbin.Root()
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}

	began := time.Now()
	// On the stand-in for openbao-operator's installation: its admission
	// policy refuses changes to its objects from anyone but itself.
	e := testbed.Start(t, testbed.Options{CRDDirs: []string{testbed.TestCRDs}, NoKwok: noKwok, OperatorPolicy: true})
	s := &Stack{Env: e, Dir: t.TempDir(), Bin: bin, Began: began}
	ctx := context.Background()
	t.Cleanup(func() {
		if t.Failed() {
			s.dump(t)
		}
	})

	// 1. Namespace, ServiceAccount and Crossplane's CRDs.
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: xpNamespace}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "crossplane", Namespace: xpNamespace}},
	} {
		if err := e.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	crds := filepath.Join(mod, "cluster", "crds")
	e.InstallCRDs(t, crds)
	t.Logf("e2e: Crossplane CRDs established at %s", time.Since(began).Round(time.Millisecond))

	// 2. RBAC as the chart sets it up: core and the RBAC manager run as
	// their ServiceAccounts, with the chart's ClusterRoles, so a rule
	// missing from what Crossplane or our manifests grant fails the test.
	// The testbed's kube-controller-manager does not aggregate ClusterRoles,
	// which Crossplane's RBAC relies on: a second one does only that.
	startChild(t, s.Dir, "kube-controller-manager-aggregation", nil, testbin.Path(t, "kube-controller-manager"),
		"--kubeconfig="+e.Kubeconfig, "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
		"--controllers=clusterrole-aggregation-controller")
	if err := e.ApplyYAML(ctx, renderChartRBAC(t, mod)); err != nil {
		t.Fatalf("chart RBAC: %v", err)
	}
	if err := e.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "rbac-manager", Namespace: xpNamespace}}); err != nil {
		t.Fatal(err)
	}
	coreKC := s.serviceAccountKubeconfig(t, "crossplane")
	rbacKC := s.serviceAccountKubeconfig(t, "rbac-manager")
	// The RBAC manager's metrics always bind :8080 (it has no flag for
	// that); if another process holds the port, it exits at start and is
	// started again below.
	rbacStarts := 1
	startRBAC := func() *child {
		return startChild(t, s.Dir, fmt.Sprintf("crossplane-rbac-manager-%d", rbacStarts), []string{"KUBECONFIG=" + rbacKC},
			core, "rbac", "start", "--provider-clusterrole=crossplane:allowed-provider-permissions")
	}
	rbacMgr := startRBAC()
	rbacSince := time.Now()

	// 3. core init, as core's ServiceAccount (the chart runs it as an init
	// container): CA and client certificate secrets, the package Lock, the
	// default runtime config and activation policy. It is retried until the
	// aggregated ClusterRole has its rules.
	admin := []string{"KUBECONFIG=" + e.Kubeconfig}
	testbed.Eventually(t, 60*time.Second, "crossplane core init", func() (bool, error) {
		cmd := exec.Command(core, "core", "init", "--cr-ds-path="+crds, "--enable-webhooks=false", //nolint:gosec // pinned tool
			"--tlsca-secret-name=crossplane-root-ca", "--tls-client-secret-name=crossplane-tls-client",
			"--activation=*")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+coreKC)
		if out, err := cmd.CombinedOutput(); err != nil {
			return false, fmt.Errorf("%w: %s", err, out)
		}
		return true, nil
	})
	certs := filepath.Join(s.Dir, "client-certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: xpNamespace, Name: "crossplane-tls-client"}, &sec); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(certs, f), sec.Data[f], 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// 4. core start, as a local process with the External package runtime
	// (nobody deploys packages; this harness is their runtime).
	xpkgCache, xfnCache := filepath.Join(s.Dir, "xpkg-cache"), filepath.Join(s.Dir, "xfn-cache")
	for _, d := range []string{xpkgCache, xfnCache} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	health := freePort(t)
	xp := startChild(t, s.Dir, "crossplane-core", []string{"KUBECONFIG=" + coreKC}, core, "core", "start",
		"--enable-webhooks=false", "--package-runtime=External",
		"--xpkg-cache-dir="+xpkgCache, "--xfn-cache-dir="+xfnCache,
		"--tls-client-certs-dir="+certs,
		fmt.Sprintf("--metrics-port=%d", freePort(t)), fmt.Sprintf("--health-probe-port=%d", health))
	testbed.Eventually(t, 60*time.Second, "crossplane core ready", func() (bool, error) {
		if xp.Exited() {
			t.Fatalf("crossplane core exited:\n%s", xp.Tail(3000))
		}
		r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", health)) //nolint:noctx // loopback probe
		if err != nil {
			return false, err
		}
		_ = r.Body.Close()
		return r.StatusCode == http.StatusOK, nil
	})
	t.Logf("e2e: crossplane core ready at %s", time.Since(began).Round(time.Millisecond))

	// The RBAC manager must run before packages arrive: core cannot watch
	// a new XR kind until it has bound core to it, and does not retry
	// soon. It fails at start, if ever, when its metrics port is taken.
	for {
		if rbacMgr.Exited() {
			if rbacStarts >= 30 || !strings.Contains(rbacMgr.Tail(3000), "address already in use") {
				t.Fatalf("the RBAC manager exited:\n%s", rbacMgr.Tail(3000))
			}
			rbacStarts++
			t.Logf("e2e: the RBAC manager found :8080 taken; starting it again (attempt %d)", rbacStarts)
			time.Sleep(time.Second)
			rbacMgr, rbacSince = startRBAC(), time.Now()
			continue
		}
		if time.Since(rbacSince) > 3*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	// 5. The loopback registry and our three packages, built by the real
	// `crossplane xpkg build` (no runtime image: the runtime is External).
	reg := startChild(t, s.Dir, "registry", nil, registry, "-address=127.0.0.1:0")
	s.Registry = strings.TrimSpace(reg.waitLine(t, "listening on ", 10*time.Second))
	s.pushPackages(t, crank)
	t.Logf("e2e: packages pushed to %s at %s", s.Registry, time.Since(began).Round(time.Millisecond))

	// 6. The install manifest, its Provider pointed at the registry, then
	// one `crossplane xpkg install configuration`.
	manifest, err := os.ReadFile(filepath.Join(testbin.Root(), "deploy", "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ApplyYAML(ctx, []byte(s.local(string(manifest)))); err != nil {
		t.Fatalf("apply deploy/install.yaml: %v", err)
	}
	run(t, admin, crank, "xpkg", "install", "configuration",
		s.Registry+"/openbao-restore/configuration-openbao-restore:"+pkgVersion, configName)

	// 7. Act as the package runtime.
	s.serveFunction(t)
	s.runProvider(t)

	s.waitCondition(t, schema.GroupVersionKind{Group: "pkg.crossplane.io", Version: "v1", Kind: "Configuration"}, "", configName, "Healthy", 60*time.Second)
	s.waitCondition(t, schema.GroupVersionKind{Group: "pkg.crossplane.io", Version: "v1", Kind: "Function"}, "", functionName, "Healthy", 60*time.Second)
	s.waitCondition(t, schema.GroupVersionKind{Group: "pkg.crossplane.io", Version: "v1", Kind: "Provider"}, "", providerName, "Healthy", 60*time.Second)
	s.waitCondition(t, schema.GroupVersionKind{Group: "apiextensions.crossplane.io", Version: "v1", Kind: "CompositeResourceDefinition"}, "", xrdName, "Established", 60*time.Second)
	// The RBAC manager binds the reconciler revision's system role to the
	// ServiceAccount of the Deployment the revision owns (runProvider).
	rev := s.activeRevision(t, gvkProviderRevision, providerName)
	testbed.Eventually(t, 30*time.Second, "the RBAC manager binding "+reconcilerSA, func() (bool, error) {
		if rbacMgr.Exited() {
			t.Fatalf("the RBAC manager exited:\n%s", rbacMgr.Tail(3000))
		}
		var crb rbacv1.ClusterRoleBinding
		if err := e.Client.Get(ctx, client.ObjectKey{Name: "crossplane:provider:" + rev.GetName() + ":system"}, &crb); err != nil {
			return false, err
		}
		for _, sub := range crb.Subjects {
			if sub.Kind == "ServiceAccount" && sub.Name == reconcilerSA && sub.Namespace == xpNamespace {
				return true, nil
			}
		}
		return false, fmt.Errorf("subjects %v", crb.Subjects)
	})

	// The Configuration's dependency must be the install manifest's
	// Provider (with its runtime config), not a second copy.
	for _, kind := range []string{"Provider", "Function"} {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(schema.GroupVersionKind{Group: "pkg.crossplane.io", Version: "v1", Kind: kind + "List"})
		if err := e.Client.List(ctx, l); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range l.Items {
			names = append(names, p.GetName())
		}
		want := functionName
		if kind == "Provider" {
			want = providerName
		}
		if len(names) != 1 || names[0] != want {
			t.Fatalf("%ss: got %v, want only %s", kind, names, want)
		}
	}
	t.Logf("e2e: stack ready (packages Healthy, XRD Established) in %s", time.Since(began).Round(time.Millisecond))
	return s
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as the
// ServiceAccount crossplane-system/name (a client certificate with its user
// name and groups), for a process that RBAC alone must authorize.
func (s *Stack) serviceAccountKubeconfig(t testing.TB, name string) string {
	t.Helper()
	kc, err := s.UserKubeconfig("system:serviceaccount:"+xpNamespace+":"+name,
		"system:serviceaccounts", "system:serviceaccounts:"+xpNamespace, "system:authenticated")
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// local points references to the published packages at the loopback
// registry.
func (s *Stack) local(doc string) string {
	return strings.ReplaceAll(doc, upstreamPrefix, s.Registry+"/openbao-restore/")
}

// dump logs the conditions of Crossplane's packages, revisions and XRDs
// and of every claim and XR, for a failed test.
func (s *Stack) dump(t testing.TB) {
	t.Helper()
	kinds := []schema.GroupVersionKind{
		{Group: "pkg.crossplane.io", Version: "v1", Kind: "Configuration"},
		{Group: "pkg.crossplane.io", Version: "v1", Kind: "ConfigurationRevision"},
		{Group: "pkg.crossplane.io", Version: "v1", Kind: "Function"},
		gvkFunctionRevision,
		{Group: "pkg.crossplane.io", Version: "v1", Kind: "Provider"},
		gvkProviderRevision,
		{Group: "apiextensions.crossplane.io", Version: "v1", Kind: "CompositeResourceDefinition"},
		{Group: "restore.openbao-restore.io", Version: "v1alpha1", Kind: "OpenBaoRestore"},
		{Group: "restore.openbao-restore.io", Version: "v1alpha1", Kind: "XOpenBaoRestore"},
	}
	var b strings.Builder
	for _, gvk := range kinds {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := s.Client.List(context.Background(), l); err != nil {
			fmt.Fprintf(&b, "%s: %v\n", gvk.Kind, err)
			continue
		}
		for _, u := range l.Items {
			_, conds := hasCondition(&u, "-")
			fmt.Fprintf(&b, "%s %s/%s: %s\n", gvk.Kind, u.GetNamespace(), u.GetName(), conds)
		}
	}
	t.Logf("---- Crossplane objects ----\n%s", b.String())
}

// operatorLocked checks that this stack is the operator-like one: the
// stand-in for openbao-operator's admission policy refuses an admin's
// (dry-run) delete of the cluster's StatefulSet and of its pod <cluster>-0,
// as it would on a real installation.
func (s *Stack) operatorLocked(t testing.TB, ns, cluster string) {
	t.Helper()
	for _, o := range []client.Object{
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cluster}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cluster + "-0"}},
	} {
		err := s.Client.Delete(context.Background(), o, client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), testbed.PolicyMessage) {
			t.Fatalf("an admin's delete of the managed %T %s/%s: %v; want the operator policy's refusal", o, ns, o.GetName(), err)
		}
	}
}
