package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbin"
)

// pushPackages builds the function, reconciler and configuration packages
// and pushes them as <registry>/openbao-restore/<name>:v0.1.0. The
// Configuration is built from a copy whose dependencies point at the
// registry.
func (s *Stack) pushPackages(t testing.TB, crank string) {
	t.Helper()
	root := testbin.Root()
	empty := filepath.Join(s.Dir, "no-examples")
	cfgRoot := filepath.Join(s.Dir, "configuration")
	for _, d := range []string{empty, cfgRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	files, err := filepath.Glob(filepath.Join(root, "package", "configuration", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("package/configuration: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f) //nolint:gosec // repository files
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "crossplane.yaml" {
			patched := s.local(string(b))
			if !strings.Contains(patched, s.Registry+"/openbao-restore/function-openbao-restore") ||
				!strings.Contains(patched, s.Registry+"/openbao-restore/reconciler-openbao-restore") {
				t.Fatalf("package/configuration/crossplane.yaml no longer depends on %s...:\n%s", upstreamPrefix, b)
			}
			b = []byte(patched)
		}
		if err := os.WriteFile(filepath.Join(cfgRoot, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct{ name, root string }{
		{"function-openbao-restore", filepath.Join(root, "package", "function")},
		{"reconciler-openbao-restore", filepath.Join(root, "package", "reconciler")},
		{"configuration-openbao-restore", cfgRoot},
	} {
		out := filepath.Join(s.Dir, p.name+".xpkg")
		run(t, nil, crank, "xpkg", "build", "--package-root="+p.root, "--examples-root="+empty, "-o", out)
		run(t, nil, crank, "xpkg", "push", "-f", out, s.Registry+"/openbao-restore/"+p.name+":"+pkgVersion)
	}
}

// activeRevision waits for the Active revision of a package and returns it.
func (s *Stack) activeRevision(t testing.TB, gvk schema.GroupVersionKind, pkg string) *unstructured.Unstructured {
	t.Helper()
	var rev *unstructured.Unstructured
	testbed.Eventually(t, 60*time.Second, "active "+gvk.Kind+" of "+pkg, func() (bool, error) {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := s.Client.List(context.Background(), l, client.MatchingLabels{"pkg.crossplane.io/package": pkg}); err != nil {
			return false, err
		}
		for i := range l.Items {
			if st, _, _ := unstructured.NestedString(l.Items[i].Object, "spec", "desiredState"); st == "Active" {
				rev = &l.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	return rev
}

// patchRuntimeStatus writes what a package runtime would: the TLS server
// secret name, the endpoint (functions only) and RuntimeHealthy=True.
func (s *Stack) patchRuntimeStatus(t testing.TB, gvk schema.GroupVersionKind, name, secret, endpoint string) {
	t.Helper()
	testbed.Eventually(t, 30*time.Second, "runtime status of "+name, func() (bool, error) {
		rev := &unstructured.Unstructured{}
		rev.SetGroupVersionKind(gvk)
		if err := s.Client.Get(context.Background(), client.ObjectKey{Name: name}, rev); err != nil {
			return false, err
		}
		_ = unstructured.SetNestedField(rev.Object, secret, "status", "tlsServerSecretName")
		if endpoint != "" {
			_ = unstructured.SetNestedField(rev.Object, endpoint, "status", "endpoint")
		}
		conds, _, _ := unstructured.NestedSlice(rev.Object, "status", "conditions")
		kept := []any{}
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "RuntimeHealthy" {
				continue
			}
			kept = append(kept, c)
		}
		kept = append(kept, map[string]any{"type": "RuntimeHealthy", "status": "True", "reason": "HealthyPackageRevision",
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339)})
		_ = unstructured.SetNestedSlice(rev.Object, kept, "status", "conditions")
		if err := s.Client.Status().Update(context.Background(), rev); err != nil {
			return false, err
		}
		return true, nil
	})
}

// serveFunction runs the function (our binary, `openbao-restore function`)
// on 127.0.0.1 with mTLS: a server certificate signed by Crossplane's root
// CA (SAN IP:127.0.0.1), client certificates verified against the same CA,
// as core always dials functions with mTLS. Then it points the
// FunctionRevision at it.
func (s *Stack) serveFunction(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	ca := s.rootCA(t)
	certPEM, keyPEM, caPEM := serverCert(t, ca.Data["tls.crt"], ca.Data["tls.key"])
	dir := filepath.Join(s.Dir, "function-tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": caPEM} {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startChild(t, s.Dir, "function", nil, s.Bin, "function", "--address="+addr, "--tls-server-certs-dir="+dir)
	testbed.Eventually(t, 30*time.Second, "the function listening on "+addr, func() (bool, error) {
		if p.Exited() {
			t.Fatalf("the function exited:\n%s", p.Tail(3000))
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false, err
		}
		return true, c.Close()
	})

	secret := functionName + "-tls-server"
	if err := s.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: xpNamespace},
		Data:       map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": caPEM},
	}); err != nil {
		t.Fatal(err)
	}
	rev := s.activeRevision(t, gvkFunctionRevision, functionName)
	s.patchRuntimeStatus(t, gvkFunctionRevision, rev.GetName(), secret, "dns:///"+addr)
	t.Logf("e2e: function served on %s for revision %s", addr, rev.GetName())
}

// rootCA is Crossplane's root CA Secret.
func (s *Stack) rootCA(t testing.TB) *corev1.Secret {
	t.Helper()
	var ca corev1.Secret
	if err := s.Client.Get(context.Background(), client.ObjectKey{Namespace: xpNamespace, Name: "crossplane-root-ca"}, &ca); err != nil {
		t.Fatal(err)
	}
	return &ca
}

// runProvider makes the reconciler's ProviderRevision healthy as an
// External runtime would: a TLS server secret (any certificate; it is only
// a CA bundle for conversion webhooks) and RuntimeHealthy=True.
func (s *Stack) runProvider(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	ca := s.rootCA(t)
	secret := providerName + "-tls-server"
	if err := s.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: xpNamespace},
		Data:       map[string][]byte{"tls.crt": ca.Data["tls.crt"]},
	}); err != nil {
		t.Fatal(err)
	}
	rev := s.activeRevision(t, gvkProviderRevision, providerName)
	s.patchRuntimeStatus(t, gvkProviderRevision, rev.GetName(), secret, "")

	// What the runtime would deploy, with no replicas: the RBAC manager
	// binds the revision's system role to the ServiceAccounts of the
	// Deployments the revision owns. The reconciler itself runs in the
	// test under that ServiceAccount's identity (startReconciler).
	replicas := int32(0)
	labels := map[string]string{"pkg.crossplane.io/revision": rev.GetName()}
	objs := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: reconcilerSA, Namespace: xpNamespace}},
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: rev.GetName(), Namespace: xpNamespace, OwnerReferences: []metav1.OwnerReference{{
				APIVersion: gvkProviderRevision.GroupVersion().String(), Kind: gvkProviderRevision.Kind,
				Name: rev.GetName(), UID: rev.GetUID(), Controller: ptr.To(true)}}},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{ServiceAccountName: reconcilerSA, Containers: []corev1.Container{{
						Name: "package-runtime", Image: s.Registry + "/openbao-restore/reconciler-openbao-restore:" + pkgVersion,
						Args: []string{"reconciler"}}}},
				},
			},
		},
	}
	for _, o := range objs {
		if err := s.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// waitCondition waits until an object has the condition with status True.
func (s *Stack) waitCondition(t testing.TB, gvk schema.GroupVersionKind, ns, name, cond string, timeout time.Duration) {
	t.Helper()
	testbed.Eventually(t, timeout, fmt.Sprintf("%s %s %s", gvk.Kind, name, cond), func() (bool, error) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		if err := s.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
			return false, err
		}
		ok, msg := hasCondition(u, cond)
		if !ok {
			return false, fmt.Errorf("%s", msg)
		}
		return true, nil
	})
}

// hasCondition reports whether u has cond=True, else a summary of its
// conditions.
func hasCondition(u *unstructured.Unstructured, cond string) (bool, string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	var sum []string
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m == nil {
			continue
		}
		if m["type"] == cond && m["status"] == "True" {
			return true, ""
		}
		sum = append(sum, fmt.Sprintf("%v=%v (%v: %v)", m["type"], m["status"], m["reason"], m["message"]))
	}
	return false, strings.Join(sum, "; ")
}

// serverCert issues a function server certificate from Crossplane's root CA
// and returns it, its key and the CA certificate, all PEM.
func serverCert(t testing.TB, caCertPEM, caKeyPEM []byte) (certPEM, keyPEM, caPEM []byte) {
	t.Helper()
	caPair, err := tls.X509KeyPair(caCertPEM, caKeyPEM)
	if err != nil {
		t.Fatalf("crossplane-root-ca: %v", err)
	}
	caCert, err := x509.ParseCertificate(caPair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{Organization: []string{"Crossplane"}, CommonName: functionName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost", functionName + "." + xpNamespace},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caPair.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		caCertPEM
}
