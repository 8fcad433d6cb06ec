#!/usr/bin/env bash
# The README's main job: set up (first run only), then run the omni-lab demo on the tiny built-in models.
# Arguments are passed to `omni-lab demo`.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
exec "$OMNI_LAB_PY" -m omni_lab.cli demo "$@"
