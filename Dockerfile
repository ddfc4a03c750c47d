# The runtime image of all three roles (function, reconciler, executor):
# a static binary, CA certificates and a nonroot user, FROM scratch.
# Build the binary first (`make build`), then `docker build .`; `make image`
# does both with Debian's buildah, with no daemon.
FROM scratch
COPY bin/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY bin/openbao-restore /openbao-restore
USER 65532:65532
ENTRYPOINT ["/openbao-restore"]
