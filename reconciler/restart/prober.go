package restart

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/template"
	"time"
)

// DefaultHealthURL is where a pod's OpenBao answers, by default: the pod
// IP and OpenBao's API port, https unless the cluster disables TLS.
const DefaultHealthURL = "{{.Scheme}}://{{.IP}}:8200"

// Target is what a health URL template may use of a pod.
type Target struct {
	Scheme, IP, Name, Namespace, Cluster string
	Ordinal                              int
	// ReadReplica: the pod is a read replica (a non-voter).
	ReadReplica bool
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
