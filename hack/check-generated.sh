#!/usr/bin/env bash
# hack/check-generated.sh: fail when a generated file differs from what its
# sources (as they are in the work tree) generate, or was never committed.
# It regenerates in a scratch copy of the tracked files, so the work tree is
# left alone and an unrelated uncommitted edit is never blamed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git ls-files -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  xargs -0 cp --parents -t "$tmp"
touch "$tmp/.before-generate"
(cd "$tmp" && go generate ./...)
fail=0
while IFS= read -r -d '' f; do
  f=${f#./}
  [ "$f" = .before-generate ] && continue
  if ! git ls-files --error-unmatch -- "$f" >/dev/null 2>&1; then
    echo "check-generated: $f is generated but not committed: run 'make generate', then git add it" >&2
    fail=1
  elif ! cmp -s "$tmp/$f" "$f"; then
    echo "check-generated: $f is stale: run 'make generate' and commit it" >&2
    diff -u "$f" "$tmp/$f" | head -40 >&2 || true
    fail=1
  fi
done < <(cd "$tmp" && find . -type f -newer .before-generate -print0)
[ "$fail" = 0 ] && echo "check-generated: every generated file is up to date and committed"
exit "$fail"
