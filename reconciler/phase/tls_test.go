package phase_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/internal/testbed"
	"github.com/openbao-restore/openbao-restore/internal/testca"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1alpha1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// tlsRestore runs a one-pod restart whose pod's health answers over TLS
// with a certificate of ca for the operator's names (no IP), and whose
// submission record says the executor verified OpenBao with recordCA
// under prod.vault.svc. It returns the XR.
func tlsRestore(t *testing.T, recordCA func(ca *testca.CA) []byte) (*testbed.Env, *unstructured.Unstructured) {
	t.Helper()
	ca := testca.New(t)
	srv := ca.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"initialized":true,"sealed":false,"standby":false}`))
	}), "openbao-cluster-prod.local", "*.prod.vault.svc", "*.vault.svc")
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	env := testbed.Shared(t)
	ns := env.Namespace(t)
	startWith(t, env, ns, false, "https://127.0.0.1:"+port)
	createCluster(t, env, ns)
	env.OpenBaoPods(t, ns, "prod", 1)
	xr := createXR(t, env, ns, nil)
	createLock(t, env, ns, xr, lockv1alpha1.LockRequestStatus{State: schemas.LockHeld, Message: "holding",
		Submission: &lockv1alpha1.Submission{Pod: "p-0", Target: "https://10.0.0.1:8200", Endpoint: "snapshot", SubmittedAt: metav1.Now(),
			TLSCA: string(recordCA(ca)), TLSServerName: "prod.vault.svc"}})
	waitPhase(t, env, xr, schemas.PhaseValidating)
	createJob(t, env, ns, xr, 0, `{"submitted":true,"exitCode":0,"snapshotKey":"k.snap","snapshotSize":3}`)
	return env, xr
}

// The health gates verify each pod's certificate, reached at an address
// it does not name, with the CA and server name the executor recorded.
func TestRestartVerifiesTLSAsTheExecutorDid(t *testing.T) {
	t.Parallel()
	env, xr := tlsRestore(t, func(ca *testca.CA) []byte { return ca.PEM })
	st := waitPhase(t, env, xr, schemas.PhaseCompleted)
	if st.Restart == nil || len(st.Restart.Pods) != 1 {
		t.Errorf("restart %+v", st.Restart)
	}
}

// A certificate that does not verify holds the restart, and the message
// says why.
func TestRestartHeldByACertificateThatDoesNotVerify(t *testing.T) {
	t.Parallel()
	env, xr := tlsRestore(t, func(*testca.CA) []byte { return testca.New(t).PEM })
	testbed.Eventually(t, 45*time.Second, "the restart held by the certificate", func() (bool, error) {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(xr), xr); err != nil {
			return false, err
		}
		st := status(t, xr)
		return st.Phase == schemas.PhaseRunning && strings.Contains(st.Message, `does not verify under "prod.vault.svc"`), nil
	})
}
