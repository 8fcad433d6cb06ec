#!/usr/bin/env bash
# The README's test command: set up (first run only), then run the whole test suite.
# Arguments are passed to pytest.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$(dirname "$0")/.."
exec "$OMNI_LAB_PY" -m pytest "$@"
