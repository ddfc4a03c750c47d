// Package input holds the function's Input type; its CRD is generated into
// the Function package.
package input

//go:generate sh -c "$(../hack/tool.sh controller-gen) object crd paths=./... output:crd:artifacts:config=../package/function/input"
