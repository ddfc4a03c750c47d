package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

// reaperMarker is the environment variable the test bed's watchdog looks for
// when the test binary dies (internal/testbed/proc.go); passing it on lets
// the watchdog also kill what a container process forked.
const reaperMarker = "OPENBAO_RESTORE_TESTBED"

// fieldValue resolves a downward-API field path.
func fieldValue(pod *corev1.Pod, fieldPath, podIP string) (string, error) {
	switch fieldPath {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "status.hostIP", "status.hostIPs":
		return pod.Status.HostIP, nil
	case "metadata.labels", "metadata.annotations":
		m := pod.Labels
		if fieldPath == "metadata.annotations" {
			m = pod.Annotations
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var sb strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&sb, "%s=%q\n", k, m[k])
		}
		return sb.String(), nil
	}
	for _, pre := range []string{"metadata.labels['", "metadata.annotations['"} {
		if strings.HasPrefix(fieldPath, pre) && strings.HasSuffix(fieldPath, "']") {
			key := strings.TrimSuffix(strings.TrimPrefix(fieldPath, pre), "']")
			if strings.HasPrefix(pre, "metadata.labels") {
				return pod.Labels[key], nil
			}
			return pod.Annotations[key], nil
		}
	}
	return "", configError{fmt.Errorf("field path %q is not supported by the harness kubelet", fieldPath)}
}

// envList keeps variables in first-definition order, later values winning.
type envList struct {
	names []string
	vals  map[string]string
}

func (e *envList) set(k, v string) {
	if e.vals == nil {
		e.vals = map[string]string{}
	}
	if _, ok := e.vals[k]; !ok {
		e.names = append(e.names, k)
	}
	e.vals[k] = v
}

func (e *envList) list() []string {
	out := make([]string, 0, len(e.names))
	for _, k := range e.names {
		out = append(out, k+"="+e.vals[k])
	}
	return out
}

// buildEnv computes a container's environment as the kubelet would, plus a
// few variables a container image would set (PATH, HOME, HOSTNAME).
func (w *podWorker) buildEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, podIP, home string) (*envList, error) {
	e := &envList{}
	e.set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	e.set("HOSTNAME", hostname(pod))
	e.set("HOME", home)
	if v, ok := os.LookupEnv(reaperMarker); ok {
		e.set(reaperMarker, v)
	}
	h, p := w.k.apiHost, w.k.apiPort
	hp := h
	if strings.Contains(h, ":") {
		hp = "[" + h + "]"
	}
	e.set("KUBERNETES_SERVICE_HOST", h)
	e.set("KUBERNETES_SERVICE_PORT", p)
	e.set("KUBERNETES_SERVICE_PORT_HTTPS", p)
	e.set("KUBERNETES_PORT", "tcp://"+hp+":"+p)
	for _, from := range c.EnvFrom {
		var data map[string][]byte
		var err error
		var optional bool
		switch {
		case from.SecretRef != nil:
			optional = ptr.Deref(from.SecretRef.Optional, false)
			data, err = w.secretData(ctx, pod.Namespace, from.SecretRef.Name)
		case from.ConfigMapRef != nil:
			optional = ptr.Deref(from.ConfigMapRef.Optional, false)
			data, err = w.configMapData(ctx, pod.Namespace, from.ConfigMapRef.Name)
		}
		var ce configError
		if errors.As(err, &ce) && optional {
			continue
		}
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			e.set(from.Prefix+k, string(data[k]))
		}
	}
	for _, v := range c.Env {
		if v.ValueFrom == nil {
			e.set(v.Name, expand(v.Value, e.vals))
			continue
		}
		val, skip, err := w.envValueFrom(ctx, pod, c, v.ValueFrom, podIP)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", v.Name, err)
		}
		if !skip {
			e.set(v.Name, val)
		}
	}
	return e, nil
}

// keyValue is the value of a secretKeyRef or configMapKeyRef whose object
// was read as data (or not, err): skipped when optional and missing.
func keyValue(kind, name, key string, optional bool, data map[string][]byte, err error) (string, bool, error) {
	var ce configError
	if errors.As(err, &ce) && optional {
		return "", true, nil
	}
	if err != nil {
		return "", false, err
	}
	v, ok := data[key]
	if !ok {
		if optional {
			return "", true, nil
		}
		return "", false, configError{fmt.Errorf("%s %q has no key %q", kind, name, key)}
	}
	return string(v), false, nil
}

func (w *podWorker) envValueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, from *corev1.EnvVarSource, podIP string) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := fieldValue(pod, from.FieldRef.FieldPath, podIP)
		return v, false, err
	case from.SecretKeyRef != nil:
		r := from.SecretKeyRef
		data, err := w.secretData(ctx, pod.Namespace, r.Name)
		return keyValue("secret", r.Name, r.Key, ptr.Deref(r.Optional, false), data, err)
	case from.ConfigMapKeyRef != nil:
		r := from.ConfigMapKeyRef
		data, err := w.configMapData(ctx, pod.Namespace, r.Name)
		return keyValue("configmap", r.Name, r.Key, ptr.Deref(r.Optional, false), data, err)
	case from.ResourceFieldRef != nil:
		v, err := resourceValue(pod, from.ResourceFieldRef, c)
		return v, false, err
	}
	return "", false, configError{errors.New("this env source is not supported by the harness kubelet")}
}

// resourceValue resolves a resourceFieldRef as the kubelet does: the
// container's request or limit, a limit defaulting to the node's
// allocatable (64 CPUs, 256Gi), divided by the divisor and rounded up.
func resourceValue(pod *corev1.Pod, ref *corev1.ResourceFieldSelector, current *corev1.Container) (string, error) {
	c := current
	if ref.ContainerName != "" || c == nil {
		c = nil
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == ref.ContainerName {
				c = &pod.Spec.Containers[i]
			}
		}
		if c == nil {
			return "", configError{fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)}
		}
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", configError{fmt.Errorf("resourceFieldRef %q is not supported", ref.Resource)}
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		switch {
		case kind == "limits" && name == "cpu":
			q = resource.MustParse("64")
		case kind == "limits" && name == "memory":
			q = resource.MustParse("256Gi")
		default:
			q = resource.MustParse("0")
		}
	}
	div := ref.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	v := (q.MilliValue() + div.MilliValue() - 1) / div.MilliValue()
	if name == "memory" || name == "ephemeral-storage" {
		v = (q.Value() + div.Value() - 1) / div.Value()
	}
	return strconv.FormatInt(v, 10), nil
}

// expand replaces $(VAR) with the variable's value when it is defined, and
// $$ with $, as Kubernetes does for env values, command and args.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			sb.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			sb.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				sb.WriteString(s[i:])
				return sb.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				sb.WriteString(v)
			} else {
				sb.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			sb.WriteByte('$')
		}
	}
	return sb.String()
}

func hostname(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// imageBinary maps an image to a local binary (Options.Images).
func (k *Kubelet) imageBinary(image string) string {
	if b, ok := k.opts.Images[image]; ok {
		return b
	}
	name := image
	if i := strings.IndexByte(name, '@'); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name = name[:i]
	}
	return k.opts.Images[name]
}

// program chooses what to run for a command line (see Options.Images): it
// returns the binary's path and argv.
func (k *Kubelet) program(image string, command, args []string) (string, []string, error) {
	bin := k.imageBinary(image)
	if len(command) == 0 {
		if bin == "" {
			return "", nil, fmt.Errorf("no binary for image %q and no command (Options.Images)", image)
		}
		return bin, append([]string{bin}, args...), nil
	}
	argv := append(append([]string(nil), command...), args...)
	if bin == "" || filepath.Base(command[0]) != filepath.Base(bin) {
		if p := lookHost(command[0]); p != "" {
			return p, argv, nil
		}
	}
	if bin == "" {
		return "", nil, fmt.Errorf("command %q is not on this machine and image %q has no binary (Options.Images)", command[0], image)
	}
	return bin, argv, nil
}

// lookHost finds a command on this machine: an absolute path that exists, or
// a bare name on PATH.
func lookHost(cmd string) string {
	if filepath.IsAbs(cmd) {
		if fi, err := os.Stat(cmd); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return cmd
		}
		return ""
	}
	if strings.Contains(cmd, "/") {
		return ""
	}
	p, err := exec.LookPath(cmd)
	if err != nil {
		return ""
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}
