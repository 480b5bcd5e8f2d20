#!/usr/bin/env bash
# One-shot objective foundation backfill (see docs/runbooks/objective-foundation-backfill.md).
# A thin wrapper over `stride backfill objective-foundation`: it checks the
# flags the runbook documents, then hands everything to stride, which passes
# the source to PostgreSQL as a query parameter (no psql, no SQL built here).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/backfill-objective-foundation.sh --database-url URL [--source LABEL] [--no-verify]
                                                [--wait] [--timeout SECONDS] [--max-rate USERS_PER_S] [--json]
                                                [--only-stale]

Enqueue one inference.objective_backfill job (deduplicated by source while it is
pending or processing), then print the runbook's verification reports.

  --database-url URL   PostgreSQL URL (default: $DATABASE_URL)
  --source LABEL       traceability/idempotency label (default: manual.objective_backfill)
  --no-verify          do not print the verification reports
  --wait               show progress until nothing of the run is left to run, then
                       report; exit 0 only when the run is complete
  --timeout SECONDS    with --wait, give up after SECONDS
  --max-rate N         refresh at most N users per second (caps the projection work)
  --json               machine-readable output
  --only-stale         snapshot only users whose objective projections are missing or
                       on a lower revision than the running code's
  -h, --help           this help
USAGE
}

die_usage() {
    echo "error: $1" >&2
    echo "Try 'scripts/backfill-objective-foundation.sh --help'." >&2
    exit 2
}

database_url="${DATABASE_URL:-}"
passthrough=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --database-url)
            [[ $# -ge 2 ]] || die_usage "--database-url needs a value"
            database_url="$2"; shift 2 ;;
        --database-url=*) database_url="${1#*=}"; shift ;;
        --source)
            [[ $# -ge 2 ]] || die_usage "--source needs a value"
            passthrough+=(--source "$2"); shift 2 ;;
        --source=*) passthrough+=(--source "${1#*=}"); shift ;;
        --timeout|--max-rate)
            [[ $# -ge 2 ]] || die_usage "$1 needs a value"
            passthrough+=("$1" "$2"); shift 2 ;;
        --timeout=*|--max-rate=*) passthrough+=("$1"); shift ;;
        --no-verify|--wait|--json|--only-stale) passthrough+=("$1"); shift ;;
        *) die_usage "unknown flag: $1" ;;
    esac
done

[[ -n "${database_url// /}" ]] || die_usage "--database-url is required (or set DATABASE_URL)"

# Prefer the project's own virtualenv, then whatever `stride` is on PATH.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${STRIDE_BIN:-}" ]]; then
    stride="$STRIDE_BIN"
elif [[ -x "$here/.venv/bin/stride" ]]; then
    stride="$here/.venv/bin/stride"
elif command -v stride >/dev/null 2>&1; then
    stride="$(command -v stride)"
else
    echo "error: stride is not installed: run 'make demo' or 'pip install -e .' first" >&2
    exit 1
fi

exec "$stride" backfill objective-foundation --database-url "$database_url" "${passthrough[@]}"
