package executor

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// bao talks to OpenBao over plain HTTP: the restore needs control the api
// client does not give (a streamed body with a known length, no redirects,
// no retries, per-request forwarding header), and the other calls are few.
type bao struct {
	hc *http.Client
}

func newBao(cfg *Config) *bao {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    cfg.TLSCA,
		ServerName: cfg.TLSServerName,
	}
	// A restore body can take minutes, and its answer comes only once
	// OpenBao has applied it: the transport bounds only the connection
	// setup. The restore bounds the wait for its answer itself (stream,
	// Config.AnswerTimeout), so that it can tell that stall apart; the
	// other calls bound themselves with their contexts.
	tr.ResponseHeaderTimeout = 0
	return &bao{hc: &http.Client{
		Transport: tr,
		// Never follow a redirect: a standby answers 307 with the active
		// node's address, and the restore must reach the leader directly or
		// not at all, so that there is exactly one destructive request.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// health is sys/health's answer.
type health struct {
	Code        int    `json:"-"`
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	Standby     bool   `json:"standby"`
	Version     string `json:"version"`
	ClusterName string `json:"cluster_name"`
	ClusterID   string `json:"cluster_id"`
}

func (b *bao) do(ctx context.Context, method, addr, path string, token Secret, body any, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, addr+path, rd)
	if err != nil {
		return 0, nil, fail(schemas.ExitConfig, err, "bad OpenBao address %s", addr)
	}
	if !token.empty() {
		req.Header.Set("X-Vault-Token", token.reveal())
	}
	req.Header.Set("X-Vault-Request", "true")
	resp, err := b.hc.Do(req)
	if err != nil {
		if t := tlsFailure(err); t != "" {
			return 0, nil, fail(schemas.ExitConfig, nil, "%s %s: TLS verification failed (%s): check %s and %s", method, addr+path, t, schemas.EnvTLSCAPath, schemas.EnvTLSServerName)
		}
		return 0, nil, transient(scrubURLError(err), "%s %s", method, addr+path)
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, nil, transient(err, "%s %s: reading the answer", method, addr+path)
	}
	return resp.StatusCode, out, nil
}

// health reads sys/health without a token. Every status code is an answer
// (200 active, 429 standby, 503 sealed, 501 uninitialised); only a network
// failure is an error.
func (b *bao) health(ctx context.Context, addr string) (*health, error) {
	code, body, err := b.do(ctx, http.MethodGet, addr, "/v1/sys/health", "", nil, 5*time.Second)
	if err != nil {
		return nil, err
	}
	h := &health{Code: code}
	if err := json.Unmarshal(body, h); err != nil {
		return nil, transient(nil, "GET %s/v1/sys/health: HTTP %d with a body that is not JSON", addr, code)
	}
	return h, nil
}

// leaderAddress asks a node for the active node's API address.
func (b *bao) leaderAddress(ctx context.Context, addr string) (string, error) {
	code, body, err := b.do(ctx, http.MethodGet, addr, "/v1/sys/leader", "", nil, 5*time.Second)
	if err != nil {
		return "", err
	}
	var l struct {
		LeaderAddress string `json:"leader_address"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &l) != nil {
		return "", transient(nil, "GET %s/v1/sys/leader: HTTP %d", addr, code)
	}
	return strings.TrimRight(l.LeaderAddress, "/"), nil
}

// findLeader probes the candidates and returns the active node. A standby
// names the active node; that address is probed too, because a restore sent
// to a standby is answered with a redirect we never follow.
func (b *bao) findLeader(ctx context.Context, candidates []string) (string, *health, error) {
	var notes []string
	reached := false
	for _, c := range candidates {
		h, err := b.health(ctx, c)
		if ExitCode(err) == schemas.ExitConfig {
			// A certificate that does not verify is a setting to fix
			// (the CA, the server name), not a node that may come back.
			return "", nil, err
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s unreachable", c))
			continue
		}
		reached = true
		switch {
		case h.Code == http.StatusOK && !h.Standby && !h.Sealed:
			return c, h, nil
		case h.Code == http.StatusTooManyRequests || h.Standby:
			l, err := b.leaderAddress(ctx, c)
			if err != nil || l == "" {
				notes = append(notes, fmt.Sprintf("%s is a standby and knows no leader", c))
				continue
			}
			lh, err := b.health(ctx, l)
			if err == nil && lh.Code == http.StatusOK && !lh.Standby && !lh.Sealed {
				return l, lh, nil
			}
			notes = append(notes, fmt.Sprintf("%s is a standby; its leader %s is not active", c, l))
		case h.Sealed:
			notes = append(notes, fmt.Sprintf("%s is sealed", c))
		case !h.Initialized:
			notes = append(notes, fmt.Sprintf("%s is not initialised", c))
		default:
			notes = append(notes, fmt.Sprintf("%s answered HTTP %d", c, h.Code))
		}
	}
	msg := "no active OpenBao node among " + strings.Join(candidates, ", ") + " (" + strings.Join(notes, "; ") + ")"
	if !reached {
		return "", nil, transient(nil, "%s", msg)
	}
	// Reachable nodes without a leader are usually an election in progress:
	// retried inside, and ExitLeader once the retries run out.
	return "", nil, fail(schemas.ExitLeader, nil, "%s", msg)
}

// loginJWT exchanges the projected ServiceAccount token for an OpenBao token.
func (b *bao) loginJWT(ctx context.Context, addr, role string, jwt Secret) (Secret, error) {
	body := map[string]string{"role": role, "jwt": jwt.reveal()}
	code, out, err := b.do(ctx, http.MethodPost, addr, "/v1/auth/jwt/login", "", body, 15*time.Second)
	if err != nil {
		return "", err
	}
	if code >= 500 || code == http.StatusTooManyRequests {
		return "", transient(nil, "JWT login with role %q: HTTP %d %s", role, code, baoErrors(out))
	}
	if code != http.StatusOK {
		return "", fail(schemas.ExitAuth, nil, "JWT login with role %q refused: HTTP %d %s", role, code, baoErrors(out))
	}
	var r struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if json.Unmarshal(out, &r) != nil || r.Auth.ClientToken == "" {
		return "", fail(schemas.ExitAuth, nil, "JWT login with role %q: no token in the answer", role)
	}
	return Secret(r.Auth.ClientToken), nil
}

// snapshotPath is where OpenBao serves its Raft snapshot (a GET) and
// takes one to restore (a POST).
const snapshotPath = "sys/storage/raft/snapshot"

// canUpdate checks, before anything destructive, that the token may update
// the restore endpoint: the anchor only finds out from the POST itself.
func (b *bao) canUpdate(ctx context.Context, addr string, token Secret, path string) error {
	return b.can(ctx, addr, token, path, "update", "restore")
}

// canRead checks that the token may read path (a safety snapshot's GET).
func (b *bao) canRead(ctx context.Context, addr string, token Secret, path string) error {
	return b.can(ctx, addr, token, path, "read", "take the safety snapshot")
}

// can checks, with sys/capabilities-self, that the token has capability
// (or root) on path, before anything is done with it; what says what for.
func (b *bao) can(ctx context.Context, addr string, token Secret, path, capability, what string) error {
	code, out, err := b.do(ctx, http.MethodPost, addr, "/v1/sys/capabilities-self", token, map[string][]string{"paths": {path}}, 10*time.Second)
	if err != nil {
		return err
	}
	if code >= 500 || code == http.StatusTooManyRequests {
		return transient(nil, "capabilities check: HTTP %d %s", code, baoErrors(out))
	}
	if code == http.StatusForbidden || code == http.StatusUnauthorized {
		return fail(schemas.ExitAuth, nil, "the token was refused by sys/capabilities-self (HTTP %d): it is invalid, expired, or lacks the default policy, which lets the executor check that it may restore before sending anything", code)
	}
	if code != http.StatusOK {
		return fail(schemas.ExitAuth, nil, "capabilities check: HTTP %d %s", code, baoErrors(out))
	}
	var r map[string]json.RawMessage
	if err := json.Unmarshal(out, &r); err != nil {
		return fail(schemas.ExitAuth, nil, "capabilities check: answer is not JSON")
	}
	var caps []string
	raw, ok := r[path]
	if !ok {
		raw = r["capabilities"]
	}
	_ = json.Unmarshal(raw, &caps)
	for _, c := range caps {
		if c == "deny" {
			break
		}
		if c == capability || c == "root" {
			return nil
		}
	}
	return fail(schemas.ExitAuth, nil, "the token may not %s: its capabilities on %s are %v, and %s is needed", what, path, caps, capability)
}

// baoErrors extracts OpenBao's error list. OpenBao never echoes a token or a
// request body in it, so it is safe to report.
func baoErrors(body []byte) string {
	var e struct {
		Errors []string `json:"errors"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
		// OpenBao wraps errors as "1 error occurred:\n\t* …": keep one line.
		s := strings.Join(strings.Fields(strings.Join(e.Errors, "; ")), " ")
		return strings.TrimPrefix(s, "1 error occurred: * ")
	}
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
