package phase

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// DefaultHealthURL is where a pod's OpenBao answers, by default: the pod
// IP and OpenBao's API port, https unless the cluster disables TLS.
const DefaultHealthURL = "{{.Scheme}}://{{.IP}}:8200"

// Target is what a health URL template may use of a pod.
type Target struct {
	Scheme, IP, Name, Namespace, Cluster string
	Ordinal                              int
}

// Prober asks a pod's OpenBao for its unauthenticated sys/health.
type Prober struct {
	url    *template.Template
	client *http.Client
}

// NewProber parses the URL template (text/template over Target, with an
// "add" function: "http://127.0.1.{{add .Ordinal 1}}:8200").
//
// TLS is not verified: the health endpoint is unauthenticated, nothing
// secret is sent, and OpenBao's certificates name services, not pod IPs.
// A forged answer could at most let a restart go on early, never delete a
// pod that was not already chosen.
func NewProber(url string, timeout time.Duration) (*Prober, error) {
	t, err := template.New("health-url").Option("missingkey=error").
		Funcs(template.FuncMap{"add": func(a, b int) int { return a + b }}).Parse(url)
	if err != nil {
		return nil, fmt.Errorf("health URL template %q: %w", url, err)
	}
	if _, err := render(t, Target{Scheme: "https", IP: "10.0.0.1", Name: "bao-0", Namespace: "ns", Cluster: "bao"}); err != nil {
		return nil, fmt.Errorf("health URL template %q: %w", url, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see above: unauthenticated, nothing secret
	tr.Proxy = nil
	return &Prober{url: t, client: &http.Client{Timeout: timeout, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

func render(t *template.Template, tg Target) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, tg); err != nil {
		return "", err
	}
	return strings.TrimRight(b.String(), "/"), nil
}

// Probe reads sys/health. OpenBao answers with a JSON body whatever its
// status code (200 active, 429 standby, 503 sealed, 501 uninitialized).
func (p *Prober) Probe(ctx context.Context, tg Target) Health {
	u, err := render(p.url, tg)
	if err != nil {
		return Health{Err: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/v1/sys/health", nil)
	if err != nil {
		return Health{Err: err.Error()}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return Health{Err: err.Error()}
	}
	defer func() { _ = resp.Body.Close() }()
	var h struct {
		Initialized, Sealed, Standby bool
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err := json.Unmarshal(body, &h); err != nil {
		return Health{Err: fmt.Sprintf("%s answered %d without a health body", u, resp.StatusCode)}
	}
	return Health{Initialized: h.Initialized, Sealed: h.Sealed, Standby: h.Standby}
}

// members reads the cluster's StatefulSet (named after the cluster, as
// openbao-operator names it) and its pods, and probes the health of every
// Ready pod, in parallel. watched says they came from the member cache,
// whose changes wake the restart; otherwise they came from the API, and
// only polling sees them change.
func (r *Reconciler) members(ctx context.Context, ns, cluster, scheme string) (m *Members, watched bool, err error) {
	m = &Members{StatefulSet: cluster}
	reader := r.APIReader
	var sts appsv1.StatefulSet
	key := types.NamespacedName{Namespace: ns, Name: cluster}
	if r.Members != nil {
		if err := r.Members.Get(ctx, key, &sts); err == nil {
			reader, watched = r.Members, true
		} else if !apierrors.IsNotFound(err) {
			return nil, false, err
		}
	}
	if !watched {
		// Not labelled schemas.LabelOperatorCluster, or really missing: ask the API.
		if err := r.APIReader.Get(ctx, key, &sts); err != nil {
			if apierrors.IsNotFound(err) {
				m.Missing = true
				return m, false, nil
			}
			return nil, false, err
		}
	}
	m.Replicas = 1
	if sts.Spec.Replicas != nil {
		m.Replicas = int(*sts.Spec.Replicas)
	}
	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil {
		return nil, false, fmt.Errorf("StatefulSet %s/%s selector: %w", ns, cluster, err)
	}
	var pods corev1.PodList
	if err := reader.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, false, err
	}
	for _, p := range pods.Items {
		if ref := metav1.GetControllerOf(&p); ref == nil || ref.UID != sts.UID {
			continue
		}
		mb := Member{Name: p.Name, UID: string(p.UID), ResourceVersion: p.ResourceVersion, IP: p.Status.PodIP,
			Terminating: p.DeletionTimestamp != nil, Ordinal: -1}
		if i := strings.LastIndexByte(p.Name, '-'); i >= 0 {
			if n, err := strconv.Atoi(p.Name[i+1:]); err == nil {
				mb.Ordinal = n
			}
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				mb.Ready = true
			}
		}
		if !mb.Ready || mb.Terminating {
			mb.Health.Err = "not probed: the pod is not Ready"
		}
		m.Pods = append(m.Pods, mb)
	}
	var wg sync.WaitGroup
	for i := range m.Pods {
		mb := &m.Pods[i]
		if mb.Health.Err != "" {
			continue
		}
		wg.Go(func() {
			mb.Health = r.Restart.Prober.Probe(ctx, Target{Scheme: scheme, IP: mb.IP, Name: mb.Name, Namespace: ns, Cluster: cluster, Ordinal: mb.Ordinal})
		})
	}
	wg.Wait()
	return m, watched, nil
}

// deletePending carries out the recorded deletion of a restart, if the pod
// with the recorded UID still exists: with the UID (and the resourceVersion
// seen) as preconditions, so that only that very pod can go, never its
// replacement. A pod already gone or already replaced needs nothing.
func (r *Reconciler) deletePending(ctx context.Context, ns string, rs *Restart, m *Members) error {
	e := rs.Pending()
	if e == nil || m == nil {
		return nil
	}
	p := m.pod(e.Name)
	if p == nil || p.UID != e.UID || p.Terminating {
		return nil
	}
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name = ns, p.Name
	uid := types.UID(p.UID)
	err := r.Client.Delete(ctx, pod, client.Preconditions{UID: &uid, ResourceVersion: &p.ResourceVersion})
	switch {
	case err == nil:
		log.FromContext(ctx).Info("deleted OpenBao pod for the restart", "pod", p.Name, "uid", p.UID)
		restartedPods.Inc()
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		// The pod changed since it was read, perhaps from a cache that
		// has not yet seen our own deletion: ask the API whether that
		// very pod is still there and not yet going.
		var cur corev1.Pod
		gerr := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: p.Name}, &cur)
		if apierrors.IsNotFound(gerr) || gerr == nil && (cur.UID != uid || cur.DeletionTimestamp != nil) {
			return nil
		}
	}
	// Still the recorded pod: the retry reads it again, and the UID
	// precondition still holds.
	return fmt.Errorf("delete pod %s/%s: %w", ns, p.Name, err)
}
