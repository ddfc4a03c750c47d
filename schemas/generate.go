package schemas

// The XRDs' schemas are generated from the CUE files; CI fails when the
// checked-in files drift (make check-generated).
//go:generate go run ../hack/genxrd ..

// The LockRequest CRD ships in the reconciler's Provider package.
//go:generate sh -c "$(../hack/tool.sh controller-gen) object crd paths=./lock/... output:crd:artifacts:config=../package/reconciler/crds"
