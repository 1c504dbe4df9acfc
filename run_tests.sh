#!/usr/bin/env bash
# The test command: installs what the tests need (Python packages, Debian's chromium for the
# real-browser test) and runs the whole suite on the shipped models, offline.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q -r requirements.txt -r requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false GRADIO_ANALYTICS_ENABLED=False
python -m pytest -q "$@" tests
