package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/openbao-restore/openbao-restore/internal/testbed/kubelet/nsinit"
)

// ServiceAccountMountPath is where the default token volume is mounted.
const ServiceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// rootCAConfigMap is published into every namespace by a controller the test
// bed does not run; the kubelet serves the apiserver's CA in its place.
const rootCAConfigMap = "kube-root-ca.crt"

// defaultTokenVolume is the name of the implicit service-account volume.
const defaultTokenVolume = "kube-api-access-harness"

// configError marks an error the pod's spec or its missing objects cause
// (CreateContainerConfigError); the worker retries.
type configError struct{ error }

// volume is a materialised pod volume.
type volume struct {
	dir      string // host directory (or file, for a hostPath file)
	readOnly bool   // secret, configMap, downwardAPI, projected: always read-only
}

type file struct {
	path string
	data []byte
	mode os.FileMode
}

// prepareVolumes writes every volume of the pod (and the implicit token
// volume, when automounted) under the pod's state directory.
func (w *podWorker) prepareVolumes(ctx context.Context, pod *corev1.Pod) (map[string]volume, error) {
	vols := map[string]volume{}
	specs := append([]corev1.Volume(nil), pod.Spec.Volumes...)
	if auto, err := w.automountToken(ctx, pod); err != nil {
		return nil, err
	} else if auto {
		specs = append(specs, corev1.Volume{Name: defaultTokenVolume, VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: rootCAConfigMap},
					Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
			}}}})
	}
	for _, v := range specs {
		dir := filepath.Join(w.dir, "volumes", v.Name)
		src := v.VolumeSource
		var files []file
		var err error
		ro := true
		switch {
		case src.EmptyDir != nil:
			ro = false
			err = os.MkdirAll(dir, 0o777)
		case src.PersistentVolumeClaim != nil:
			ro = src.PersistentVolumeClaim.ReadOnly
			dir, err = w.claimVolume(ctx, pod.Namespace, src.PersistentVolumeClaim.ClaimName)
		case src.HostPath != nil:
			ro = false
			dir, err = hostPathVolume(src.HostPath)
		case src.Secret != nil:
			files, err = w.secretFiles(ctx, pod.Namespace, src.Secret.SecretName, src.Secret.Items, src.Secret.DefaultMode, src.Secret.Optional)
		case src.ConfigMap != nil:
			files, err = w.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.DefaultMode, src.ConfigMap.Optional)
		case src.DownwardAPI != nil:
			files, err = downwardFiles(pod, src.DownwardAPI.Items, src.DownwardAPI.DefaultMode)
		case src.Projected != nil:
			files, err = w.projectedFiles(ctx, pod, src.Projected)
		default:
			err = configError{fmt.Errorf("volume %s: this volume type is not supported by the harness kubelet", v.Name)}
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if files != nil || src.Secret != nil || src.ConfigMap != nil || src.DownwardAPI != nil || src.Projected != nil {
			if err := writeFiles(dir, files); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
		vols[v.Name] = volume{dir: dir, readOnly: ro}
	}
	return vols, nil
}

// automountToken reports whether the default token volume is added, and
// makes sure the service account exists (creating "default", as the
// service-account controller the test bed does not run would).
func (w *podWorker) automountToken(ctx context.Context, pod *corev1.Pod) (bool, error) {
	if pod.Spec.AutomountServiceAccountToken != nil && !*pod.Spec.AutomountServiceAccountToken {
		return false, nil
	}
	sa, err := w.serviceAccount(ctx, pod)
	if err != nil {
		return false, err
	}
	if pod.Spec.AutomountServiceAccountToken == nil && sa.AutomountServiceAccountToken != nil && !*sa.AutomountServiceAccountToken {
		return false, nil
	}
	return true, nil
}

func serviceAccountName(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	if pod.Spec.DeprecatedServiceAccount != "" {
		return pod.Spec.DeprecatedServiceAccount
	}
	return "default"
}

func (w *podWorker) serviceAccount(ctx context.Context, pod *corev1.Pod) (*corev1.ServiceAccount, error) {
	name := serviceAccountName(pod)
	sas := w.k.cs.CoreV1().ServiceAccounts(pod.Namespace)
	sa, err := sas.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && name == "default" {
		sa, err = sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: pod.Namespace}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			sa, err = sas.Get(ctx, name, metav1.GetOptions{})
		}
	}
	if apierrors.IsNotFound(err) {
		return nil, configError{fmt.Errorf("service account %q not found", name)}
	}
	return sa, err
}

func (w *podWorker) claimVolume(ctx context.Context, namespace, claim string) (string, error) {
	pvc, err := w.k.cs.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, claim, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", configError{fmt.Errorf("persistentvolumeclaim %q not found", claim)}
	}
	if err != nil {
		return "", err
	}
	dir := w.k.claimDir(namespace, claim, pvc.UID)
	return dir, os.MkdirAll(dir, 0o777)
}

func hostPathVolume(hp *corev1.HostPathVolumeSource) (string, error) {
	p := filepath.Clean(hp.Path)
	switch ptr.Deref(hp.Type, corev1.HostPathUnset) {
	case corev1.HostPathDirectoryOrCreate:
		return p, os.MkdirAll(p, 0o755)
	case corev1.HostPathFileOrCreate:
		return p, nsinit.CreateFile(p)
	}
	if _, err := os.Stat(p); err != nil {
		return "", configError{err}
	}
	return p, nil
}

func modeOr(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m) & os.ModePerm
}

// keyFiles turns a key/value map into files, following items when given.
func keyFiles(kind, name string, data map[string][]byte, items []corev1.KeyToPath, defMode os.FileMode, optional bool) ([]file, error) {
	var files []file
	if len(items) == 0 {
		for key, v := range data {
			files = append(files, file{path: key, data: v, mode: defMode})
		}
		return files, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, configError{fmt.Errorf("%s %q has no key %q", kind, name, it.Key)}
		}
		files = append(files, file{path: it.Path, data: v, mode: modeOr(it.Mode, defMode)})
	}
	return files, nil
}

func (w *podWorker) secretData(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	s, err := w.k.cs.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, configError{fmt.Errorf("secret %q not found", name)}
	}
	if err != nil {
		return nil, err
	}
	return s.Data, nil
}

func (w *podWorker) configMapData(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	cm, err := w.k.cs.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && name == rootCAConfigMap {
		return map[string][]byte{"ca.crt": w.k.ca}, nil
	}
	if apierrors.IsNotFound(err) {
		return nil, configError{fmt.Errorf("configmap %q not found", name)}
	}
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return data, nil
}

func (w *podWorker) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, defMode *int32, optional *bool) ([]file, error) {
	data, err := w.secretData(ctx, ns, name)
	var ce configError
	if errors.As(err, &ce) && ptr.Deref(optional, false) {
		return []file{}, nil
	}
	if err != nil {
		return nil, err
	}
	return keyFiles("secret", name, data, items, modeOr(defMode, 0o644), ptr.Deref(optional, false))
}

func (w *podWorker) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, defMode *int32, optional *bool) ([]file, error) {
	data, err := w.configMapData(ctx, ns, name)
	var ce configError
	if errors.As(err, &ce) && ptr.Deref(optional, false) {
		return []file{}, nil
	}
	if err != nil {
		return nil, err
	}
	return keyFiles("configmap", name, data, items, modeOr(defMode, 0o644), ptr.Deref(optional, false))
}

func downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, defMode *int32) ([]file, error) {
	files := []file{}
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = fieldValue(pod, it.FieldRef.FieldPath, "")
		case it.ResourceFieldRef != nil:
			v, err = resourceValue(pod, it.ResourceFieldRef, nil)
		default:
			err = configError{fmt.Errorf("downward API item %s: no fieldRef or resourceFieldRef", it.Path)}
		}
		if err != nil {
			return nil, err
		}
		files = append(files, file{path: it.Path, data: []byte(v), mode: modeOr(it.Mode, modeOr(defMode, 0o644))})
	}
	return files, nil
}

func (w *podWorker) projectedFiles(ctx context.Context, pod *corev1.Pod, p *corev1.ProjectedVolumeSource) ([]file, error) {
	defMode := modeOr(p.DefaultMode, 0o644)
	files := []file{}
	for _, s := range p.Sources {
		var fs []file
		var err error
		switch {
		case s.Secret != nil:
			fs, err = w.secretFiles(ctx, pod.Namespace, s.Secret.Name, s.Secret.Items, ptr.To(int32(defMode)), s.Secret.Optional)
		case s.ConfigMap != nil:
			fs, err = w.configMapFiles(ctx, pod.Namespace, s.ConfigMap.Name, s.ConfigMap.Items, ptr.To(int32(defMode)), s.ConfigMap.Optional)
		case s.DownwardAPI != nil:
			fs, err = downwardFiles(pod, s.DownwardAPI.Items, ptr.To(int32(defMode)))
		case s.ServiceAccountToken != nil:
			var tok string
			tok, err = w.token(ctx, pod, s.ServiceAccountToken)
			fs = []file{{path: s.ServiceAccountToken.Path, data: []byte(tok), mode: defMode}}
		default:
			err = configError{errors.New("this projected source is not supported by the harness kubelet")}
		}
		if err != nil {
			return nil, err
		}
		files = append(files, fs...)
	}
	return files, nil
}

// token asks the TokenRequest API for a token bound to the pod, as the
// kubelet does.
func (w *podWorker) token(ctx context.Context, pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) (string, error) {
	sa, err := w.serviceAccount(ctx, pod)
	if err != nil {
		return "", err
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To(ptr.Deref(p.ExpirationSeconds, 3600)),
	}}
	// A token can be bound only to a pod that names its service account;
	// with the ServiceAccount admission plugin off (as in the test bed)
	// spec.serviceAccountName may be empty, and the token is then unbound.
	if pod.Spec.ServiceAccountName == sa.Name {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	if p.Audience != "" {
		req.Spec.Audiences = []string{p.Audience}
	}
	tr, err := w.k.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa.Name, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token request for service account %s: %w", sa.Name, err)
	}
	return tr.Status.Token, nil
}

// writeFiles (re)creates dir holding exactly these files.
func writeFiles(dir string, files []file) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	for _, f := range files {
		clean := path.Clean(f.path)
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || clean == "." {
			return configError{fmt.Errorf("invalid file path %q", f.path)}
		}
		p := filepath.Join(dir, filepath.FromSlash(clean))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil { // umask
			return err
		}
	}
	return nil
}
