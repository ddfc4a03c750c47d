package phase

// The phase reconciler's ClusterRole is generated from its RBAC markers; the
// tests run the reconciler under exactly this role, and deploy/install.yaml
// must grant it too (test/install checks).
//go:generate sh -c "$(../../hack/tool.sh controller-gen) rbac:roleName=openbao-restore-phase paths=./... output:rbac:dir=rbac"
