#!/usr/bin/env bash
# The README's test command: set up (first run only), then run the whole test suite.
# Arguments are passed to pytest.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$(dirname "$0")/.."

# tests/test_browser.py drives Debian's Chromium (never a browser Playwright downloads); install it where apt
# is usable, else the test skips itself.
if [ ! -x /usr/bin/chromium ]; then
  if apt_usable; then
    echo "[test] installing Debian's chromium for the browser test"
    apt_install chromium || echo "[test] could not install chromium: the browser test will be skipped"
  else
    echo "[test] /usr/bin/chromium is missing and apt is not usable here: the browser test will be skipped"
  fi
fi

# tests/test_audio.py checks the waveform metrics on real (synthetic) speech from Debian's espeak-ng; where it
# cannot be installed that one test skips, the metric tests on generated signals still run.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if apt_usable; then
    echo "[test] installing Debian's espeak-ng for the speech test of the waveform metrics"
    apt_install espeak-ng || echo "[test] could not install espeak-ng: the speech test will be skipped"
  else
    echo "[test] espeak-ng is missing and apt is not usable here: the speech test will be skipped"
  fi
fi

exec "$OMNI_LAB_PY" -m pytest "$@"
