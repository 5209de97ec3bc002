#!/usr/bin/env bash
# One prepared GPU benchmark run, under ~8 minutes on one H100/H200-class GPU.
#
#   bash benchmarks/gpu.sh             # on a GPU machine; results under $OUT (if set) and benchmarks/results/
#   bash benchmarks/gpu.sh --dry-run   # on a CPU: the same steps at tiny sizes, nothing required of a GPU
#
# Steps (each under its own time limit, progress printed):
#   1. Python packages: uses what the interpreter has (JAX with a CUDA plugin, PyTorch with CUDA,
#      flax, optax, orbax); installs what is missing: from wheels in .whl/ (offline machines: carry
#      captum as a wheel there), else with pip from the index (jax[cuda12], torch, captum), unless
#      COCOA_JAX_GPU_NO_PIP=1.
#   2. python -m benchmarks.suites.rates: RISE masks/s, IG and GradientSHAP steps/s, insertion/deletion
#      evaluations/s of cocoa-jax vs PyTorch + Captum on the same GPU, ResNet-50 and CLIP ViT-B/32
#      at 224 px, K=1 and K=4, and bf16 vs float32 (counts x --scale 8).
#   3. python -m benchmarks.suites.protocol: the paper's protocol, cocoa-jax sweep vs the official way
#      (PyTorch on the same GPU).
#   4. benchmarks/results/RESULTS_gpu.md: the device named, both results files, what did not finish.
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run|--quick) DRY=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $arg (use --dry-run)" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
[ -x "$REPO/.venv/bin/python" ] && [ "$DRY" = 1 ] && PY="$REPO/.venv/bin/python"
if [ "$DRY" = 1 ]; then DEST="${OUT:-$(mktemp -d /tmp/cocoa_jax_gpu_dry.XXXXXX)}"; else DEST="${OUT:-$REPO/benchmarks/results/gpu_out}"; fi
mkdir -p "$DEST"
LOG="$DEST/gpu_log.txt"
: > "$LOG"
START=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export COCOA_JAX_CACHE_DIR="${COCOA_JAX_CACHE_DIR:-/tmp/cocoa_jax_gpu_cache}"
# Budgets (seconds): the whole run stays under ~8 minutes.
if [ "$DRY" = 1 ]; then T_INSTALL=60; T_SUITE=240; T_PROTOCOL=240; else T_INSTALL=60; T_SUITE=240; T_PROTOCOL=180; fi

say() { echo "[gpu.sh $(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# ------------------------------------------------------------------ 1. packages
have() { "$PY" -c "import $1" >/dev/null 2>&1; }
say "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
MISSING=()
for mod in jax flax optax orbax.checkpoint torch captum matplotlib sklearn tqdm PIL; do
  have "$mod" || MISSING+=("$mod")
done
if [ "${#MISSING[@]}" -gt 0 ]; then
  say "missing: ${MISSING[*]}"
  if compgen -G ".whl/*.whl" >/dev/null; then
    say "installing the wheels in .whl/ (offline)"
    timeout "$T_INSTALL" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/cocoa_jax_site .whl/*.whl 2>&1 | tail -3 | tee -a "$LOG"
    export PYTHONPATH="/tmp/cocoa_jax_site:$PYTHONPATH"
  elif [ "${COCOA_JAX_GPU_NO_PIP:-0}" != 1 ]; then
    PKGS=()
    for mod in "${MISSING[@]}"; do
      case "$mod" in
        jax) PKGS+=("jax[cuda12]") ;; torch) PKGS+=("torch") ;; captum) PKGS+=("captum") ;;
        orbax.checkpoint) PKGS+=("orbax-checkpoint") ;; sklearn) PKGS+=("scikit-learn") ;; PIL) PKGS+=("pillow") ;;
        *) PKGS+=("$mod") ;;
      esac
    done
    say "pip install ${PKGS[*]}"
    timeout "$T_INSTALL" "$PY" -m pip install -q "${PKGS[@]}" 2>&1 | tail -3 | tee -a "$LOG"
  fi
fi
# GPU JAX without a CUDA plugin: try the CUDA build once (not in a dry run).
if [ "$DRY" = 0 ] && ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" >/dev/null 2>&1; then
  if [ "${COCOA_JAX_GPU_NO_PIP:-0}" != 1 ]; then
    say "JAX sees no GPU: pip install jax[cuda12]"
    timeout "$T_INSTALL" "$PY" -m pip install -q "jax[cuda12]" 2>&1 | tail -3 | tee -a "$LOG"
  fi
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import jax
try:
    import torch
    t = f"torch {torch.__version__}, cuda {torch.cuda.is_available()}" + (
        f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "")
except Exception as err:  # noqa: BLE001
    t = f"torch absent ({err})"
try:
    import captum
    c = f"captum {captum.__version__}"
except Exception:  # noqa: BLE001
    c = "captum absent"
d = jax.devices()[0]
print(f"JAX {jax.__version__}: backend {jax.default_backend()}, {jax.device_count()} x {d.device_kind}; {t}; {c}")
EOF
if [ "$DRY" = 0 ] && ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" >/dev/null 2>&1; then
  say "ERROR: JAX runs on $("$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo nothing), not a GPU; stopping (use --dry-run on a CPU)"
  exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee -a "$LOG"

# ------------------------------------------------------------------ 2. the suite
SUITE_MD="$DEST/RESULTS_gpu_suite.md"
if [ "$DRY" = 1 ]; then
  SUITE_ARGS=(--quick --skip devices,batch,steps,e2e --torch-device cpu)
else
  # No host-device scaling on a GPU (devices), no CPU batch sweep (batch); IG quadrature (steps) is
  # device-independent; the end to end is step 3's protocol.
  SUITE_ARGS=(--models resnet50,clip_vit_b32 --skip devices,batch,steps,e2e --scale 8 --devices 1)
fi
say "benchmarks.suites.rates ${SUITE_ARGS[*]} (limit ${T_SUITE}s)"
timeout "$T_SUITE" "$PY" -m benchmarks.suites.rates "${SUITE_ARGS[@]}" --out "$SUITE_MD" 2>&1 | tee -a "$LOG" \
  | grep -E "==|K=|peak|wrote|Error|error" || true
SUITE_RC=${PIPESTATUS[0]}
say "benchmarks.suites.rates exit $SUITE_RC"

# ------------------------------------------------------------------ 3. the protocol
PROTO_MD="$DEST/RESULTS_gpu_protocol.md"
if [ "$DRY" = 1 ]; then PROTO_ARGS=(--settings quick --skip-devices); else PROTO_ARGS=(--settings issue --skip-devices); fi
say "benchmarks.suites.protocol ${PROTO_ARGS[*]} (limit ${T_PROTOCOL}s)"
timeout "$T_PROTOCOL" "$PY" -m benchmarks.suites.protocol "${PROTO_ARGS[@]}" --out "$PROTO_MD" --overwrite 2>&1 \
  | tee -a "$LOG" | tail -25
PROTO_RC=${PIPESTATUS[0]}
say "benchmarks.suites.protocol exit $PROTO_RC"

# ------------------------------------------------------------------ 4. RESULTS_gpu.md
RESULT="$DEST/RESULTS_gpu.md"
"$PY" - "$RESULT" "$SUITE_MD" "$PROTO_MD" "$SUITE_RC" "$PROTO_RC" "$DRY" <<'EOF' 2>&1 | tee -a "$LOG"
import os, sys, time
import jax
out, suite, proto, suite_rc, proto_rc, dry = sys.argv[1:]
device = jax.devices()[0]
lines = [f"# cocoa-jax on {device.device_kind} ({time.strftime('%Y-%m-%d')})", "",
         f"`bash benchmarks/gpu.sh`{' --dry-run (CPU, tiny sizes: NOT a GPU result)' if dry == '1' else ''}: "
         f"JAX {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} device(s).", ""]
for title, path, rc in (("Suite: rates vs PyTorch on the same device", suite, suite_rc),
                        ("The paper's protocol end to end", proto, proto_rc)):
    lines += [f"## {title}", ""]
    status = {"0": "", "124": " (stopped at its time limit)"}.get(rc, f" (exit status {rc})")
    if os.path.isfile(path):
        with open(path) as fh:
            body = fh.read().splitlines()
        lines += [l.replace("# ", "### ", 1) if l.startswith("# ") else l for l in body] + [""]
        if status:
            lines += [f"Note: this step ended{status}.", ""]
    else:
        lines += [f"Not written{status or ''}: see gpu_log.txt.", ""]
with open(out, "w") as fh:
    fh.write("\n".join(lines))
print(f"wrote {out}")
EOF
[ "$DRY" = 0 ] && [ "$DEST" != "$REPO/benchmarks/results" ] && cp "$RESULT" "$REPO/benchmarks/results/RESULTS_gpu.md" 2>/dev/null
say "done in $(( $(date +%s) - START )) s; files in $DEST"
