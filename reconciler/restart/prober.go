package restart

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
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
	// TLS, if set, verifies an https answer.
	TLS *TLS
}

// TLS is how the health gates verify a pod's certificate: with the CA
// bundle (PEM) and under the server name the executor verified OpenBao
// with, as its submission record says. OpenBao's certificates name
// services, never pod IPs, so the name is the record's, not the address's.
type TLS struct {
	CA         []byte
	ServerName string
}

// Prober asks a pod's OpenBao for its unauthenticated sys/health.
type Prober struct {
	url     *template.Template
	client  *http.Client
	timeout time.Duration
}

// NewProber parses the URL template (text/template over Target, with an
// "add" function: "http://127.0.1.{{add .Ordinal 1}}:8200").
//
// An https answer is verified when the target carries TLS. Without it
// (no submission record to take it from, or a record of an executor that
// did not write it) it is not: the health endpoint is unauthenticated and
// nothing secret is sent; a forged answer could at most let a restart go
// on early, never evict a pod that was not already chosen.
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
	return &Prober{url: t, timeout: timeout, client: &http.Client{Timeout: timeout, Transport: tr,
		CheckRedirect: noRedirect}}, nil
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// verifying is a client that verifies the certificate against tl: a
// transport of its own, without keep-alives, since each CA and name is a
// restore's and a probe is one request a second at most.
func (p *Prober) verifying(tl *TLS) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(tl.CA) {
		return nil, errors.New("the CA bundle in the restore's submission record holds no PEM certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: tl.ServerName},
		DisableKeepAlives: true, TLSHandshakeTimeout: p.timeout}
	return &http.Client{Timeout: p.timeout, Transport: tr, CheckRedirect: noRedirect}, nil
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
	c := p.client
	if tg.TLS != nil && len(tg.TLS.CA) > 0 && strings.HasPrefix(u, "https://") {
		if c, err = p.verifying(tg.TLS); err != nil {
			return Health{Err: err.Error()}
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		if v := new(tls.CertificateVerificationError); errors.As(err, &v) {
			return Health{Err: fmt.Sprintf("%s: its certificate does not verify under %q with the CA the executor used: %v", u, tg.TLS.ServerName, v.Err)}
		}
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
