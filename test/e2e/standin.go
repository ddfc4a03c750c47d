package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/baotest"
	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testbed/kubelet"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// The stand-in for openbao-operator's handling of a new OpenBaoCluster,
// written from the ANCHOR facts and the operator's API (spec.unseal,
// spec.selfInit): it runs the cluster (runBao), with the static seal key of
// Secret <name>-unseal-key (created when absent, as the operator does),
// OpenBao's self-initialisation from spec.selfInit (OIDC: a JWT auth mount
// at auth/jwt that trusts the API server's service-account tokens; then
// the requests), and reports status.initialized, selfInitialized and
// currentVersion, as the operator does once the cluster is up.

// bootstrapComposed waits for the OpenBaoCluster name (a fresh-target
// restore composes it) and bootstraps it; it returns a client of the new
// cluster, which has no root token (self-initialisation revokes it).
func (s *Stack) bootstrapComposed(t testing.TB, k *kubelet.Kubelet, ns, name string) *baotest.Cluster {
	t.Helper()
	ctx := context.Background()
	c := &unstructured.Unstructured{}
	c.SetAPIVersion(schemas.ClusterGroup + "/" + schemas.ClusterVersion)
	c.SetKind(schemas.ClusterKind)
	testbed.Eventually(t, 2*time.Minute, "the composed OpenBaoCluster "+name, func() (bool, error) {
		err := s.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, c)
		return err == nil, client.IgnoreNotFound(err)
	})
	began := time.Now()
	op, err := s.Operator()
	if err != nil {
		t.Fatal(err)
	}
	owner := []metav1.OwnerReference{{APIVersion: c.GetAPIVersion(), Kind: c.GetKind(), Name: name, UID: c.GetUID(),
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
	voters := 1
	if r, ok, _ := unstructured.NestedInt64(c.Object, "spec", "replicas"); ok {
		voters = int(r)
	}
	seal := name + "-unseal-key"
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: seal}, &corev1.Secret{}); apierrors.IsNotFound(err) {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: seal, Namespace: ns, Labels: testbed.ClusterPodLabels(name), OwnerReferences: owner},
			Data: map[string][]byte{"key": key}}
		if err := op.Create(ctx, sec); err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	set := baoSet{ns: ns, name: name, voters: voters, seal: seal, init: s.selfInitHCL(t, c), owner: owner}
	bao := baotest.Attach(t, set.ips(k))
	s.runBao(t, k, set, bao)

	var h baotest.Health
	testbed.Eventually(t, 2*time.Minute, name+" self-initialised", func() (bool, error) {
		h, err = bao.Probe(0)
		return err == nil && h.Initialized && !h.Sealed && h.ClusterID != "", nil
	})
	orig := c.DeepCopy()
	for k, v := range map[string]any{"initialized": true, "selfInitialized": true, "currentVersion": h.Version, "readyReplicas": int64(voters)} {
		_ = unstructured.SetNestedField(c.Object, v, "status", k)
	}
	if err := op.Status().Patch(ctx, c, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	t.Logf("e2e: the stand-in operator bootstrapped the new cluster %s (%d voter(s), self-initialised, cluster_id %s, version %s) in %s",
		name, voters, h.ClusterID, h.Version, time.Since(began).Round(time.Millisecond))
	return bao
}

// selfInitHCL renders spec.selfInit as OpenBao's initialize stanzas.
func (s *Stack) selfInitHCL(t testing.TB, c *unstructured.Unstructured) string {
	t.Helper()
	var b strings.Builder
	if on, _, _ := unstructured.NestedBool(c.Object, "spec", "selfInit", "oidc", "enabled"); on {
		issuer, keys := s.serviceAccountIssuer(t)
		b.WriteString("initialize \"oidc\" {\n")
		writeRequest(&b, map[string]any{"name": "enable_jwt", "operation": "update", "path": "sys/auth/jwt", "data": map[string]any{"type": "jwt"}})
		writeRequest(&b, map[string]any{"name": "config_jwt", "operation": "update", "path": "auth/jwt/config",
			"data": map[string]any{"jwt_validation_pubkeys": keys, "bound_issuer": issuer}})
		b.WriteString("}\n")
	}
	reqs, _, _ := unstructured.NestedSlice(c.Object, "spec", "selfInit", "requests")
	if len(reqs) > 0 {
		b.WriteString("initialize \"requests\" {\n")
		for _, r := range reqs {
			writeRequest(&b, r.(map[string]any))
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func writeRequest(b *strings.Builder, r map[string]any) {
	fmt.Fprintf(b, "  request %q {\n    operation = %q\n    path = %q\n", r["name"], r["operation"], r["path"])
	if d, ok := r["data"]; ok {
		fmt.Fprintf(b, "    data = %s\n", hclValue(d))
	}
	b.WriteString("  }\n")
}

// hclValue writes a JSON value in HCL.
func hclValue(v any) string {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s = %s", k, hclValue(x[k])))
		}
		return "{\n" + strings.Join(parts, "\n") + "\n}"
	case []any:
		var parts []string
		for _, e := range x {
			parts = append(parts, hclValue(e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []string:
		var parts []string
		for _, e := range x {
			parts = append(parts, strconv.Quote(e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case string:
		return strconv.Quote(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case int64:
		return strconv.FormatInt(x, 10)
	case bool:
		return strconv.FormatBool(x)
	}
	return strconv.Quote(fmt.Sprint(v))
}

// serviceAccountIssuer is the API server's service-account token issuer
// and its signing keys as PEM, from its OIDC discovery documents: what
// openbao-operator's OIDC self-initialisation points the JWT mount at.
func (s *Stack) serviceAccountIssuer(t testing.TB) (string, []string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var disc struct {
		Issuer string `json:"issuer"`
	}
	raw, err := cs.RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err == nil {
		err = json.Unmarshal(raw, &disc)
	}
	if err != nil {
		t.Fatalf("the API server's OIDC discovery: %v", err)
	}
	var jwks struct {
		Keys []struct {
			Kty, Crv, N, E, X, Y string
		} `json:"keys"`
	}
	raw, err = cs.RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err == nil {
		err = json.Unmarshal(raw, &jwks)
	}
	if err != nil {
		t.Fatalf("the API server's JWKS: %v", err)
	}
	var pems []string
	raw64 := func(b64 string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("the API server's JWKS: %v", err)
		}
		return b
	}
	for _, k := range jwks.Keys {
		var pub any
		switch {
		case k.Kty == "RSA":
			pub = &rsa.PublicKey{N: new(big.Int).SetBytes(raw64(k.N)), E: int(new(big.Int).SetBytes(raw64(k.E)).Int64())}
		case k.Kty == "EC" && k.Crv == "P-256":
			// The uncompressed point: 0x04, then X and Y of 32 bytes each.
			pt := make([]byte, 65)
			pt[0] = 4
			x, y := raw64(k.X), raw64(k.Y)
			copy(pt[33-len(x):33], x)
			copy(pt[65-len(y):], y)
			ec, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
			if err != nil {
				t.Fatalf("the API server's JWKS: %v", err)
			}
			pub = ec
		default:
			continue
		}
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	}
	if len(pems) == 0 {
		t.Fatalf("the API server's JWKS has no RSA or P-256 key: %s", raw)
	}
	return disc.Issuer, pems
}
