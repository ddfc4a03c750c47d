package drill

// The drill reconciler's ClusterRole is generated from its RBAC markers;
// deploy/install.yaml must grant it too (test/install checks).
//go:generate sh -c "$(../../hack/tool.sh controller-gen) rbac:roleName=openbao-restore-drill paths=./... output:rbac:dir=rbac"
