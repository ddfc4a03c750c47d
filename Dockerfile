# The runtime image of all three roles (function, reconciler, executor):
# static binaries, CA certificates and a nonroot user, FROM scratch.
# `make image` (hack/xpkg.sh) puts the binaries and the CA bundle into bin/
# and builds this with Debian's buildah, with no daemon; `make build` makes
# the binaries but not bin/ca-certificates.crt.
FROM scratch
COPY bin/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY bin/openbao-restore /openbao-restore
# The executor alone: /openbao-restore execs it for a restore, so that the
# Job's process maps none of the function's and the reconciler's code.
COPY bin/openbao-restore-executor /openbao-restore-executor
USER 65532:65532
ENTRYPOINT ["/openbao-restore"]
