package testbed

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

// AddUser returns a REST config for a user with these groups, whom RBAC
// alone authorizes (for least-privilege tests).
func (e *Env) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, e.Config)
	if err != nil {
		return nil, err
	}
	return u.Config(), nil
}

// UserKubeconfig writes a kubeconfig for a user with these groups, whom
// RBAC alone authorizes, and returns its path: for a controller run as a
// separate process under least privilege.
func (e *Env) UserKubeconfig(name string, groups ...string) (string, error) {
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, e.Config)
	if err != nil {
		return "", err
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(e.Dir, "user-"+dnsLabel(name, 60)+".kubeconfig")
	return path, os.WriteFile(path, kc, 0o600)
}

// RoleUser returns a REST config for a user bound to the ClusterRole in
// roleFile (applied first) and to nothing else, so that a test of a
// controller run as that user also proves its role suffices.
func (e *Env) RoleUser(ctx context.Context, user, roleFile string) (*rest.Config, error) {
	data, err := os.ReadFile(roleFile)
	if err != nil {
		return nil, err
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(data, &role); err != nil || role.Name == "" {
		return nil, fmt.Errorf("%s is not one ClusterRole: %v", roleFile, err)
	}
	if err := e.ApplyYAML(ctx, data); err != nil {
		return nil, err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if err := e.Client.Create(ctx, binding); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	return e.AddUser(user)
}
