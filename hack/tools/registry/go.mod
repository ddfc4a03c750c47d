// Tools module for the loopback OCI registry that the e2e tests push the
// project's packages to. Built by hack/tool.sh.
module github.com/openbao-restore/openbao-restore/hack/tools/registry

go 1.26.0

require github.com/google/go-containerregistry v0.20.7
