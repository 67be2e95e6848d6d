#!/usr/bin/env bash
# Every GPU check of BENCHMARKS.md ("GPU checks") and the text-to-image GPU benchmark, as
# one command for a session lent a GPU machine (no network there: diffusers and its
# importlib_metadata travel as wheels in .whl/, see BENCHMARKS.md). Each part has its own
# time limit so one slow part cannot eat the others; logs go to $OUT (or ./gpu-logs).
#   bash benchmarks/gpu_all.sh
set -u
OUT=${OUT:-gpu-logs}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || cat "$OUT/install.log"
python3 -c "import torch, diffusers, peft, pandas, typer; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'pandas', pandas.__version__, 'typer', typer.__version__, torch.cuda.get_device_name())"
part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "=== $name: exit $? in $((SECONDS - t0)) s"
  grep -v -i warn "$OUT/$name.log" | tail -n 40
}
[ -n "${SKIP_EXACT:-}" ] || part exact 130 env ROYALTY_TEST_DEVICE=cuda python3 -m pytest -q -x -n 8 -p no:cacheprovider tests/test_engine_exact.py tests/test_train_pass.py
part engine 90 python3 benchmarks/engine.py --device cuda --repeats 8
part engine_t2i 180 python3 benchmarks/engine_t2i.py --size sd15 --device cuda --batch 8 --targets 4 --rank 16 --repeats 5 --methods "plain,two passes,first,second,applied first,applied second (secant),torch.func"
part conv_kernels 60 python3 benchmarks/conv_kernels.py --device cuda --repeats 10
part gpu_check 240 python3 benchmarks/gpu_check.py --out /tmp/gpu-check
