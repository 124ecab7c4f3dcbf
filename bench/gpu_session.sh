#!/usr/bin/env bash
# The GPU session in one go: build with CUDA for sm_90, the CUDA tests, compute-sanitizer
# memcheck and racecheck over the CUDA tests, the GPU benchmark, and the whole test suite
# (last: it gets the time left of BUDGET seconds, 560 by default, so the run stays under
# the device's ten-minute limit). Each stage writes its log into LOGDIR and has its own time
# limit, and a failing stage does not stop the next. A summary comes last.
#
#   bash bench/gpu_session.sh LOGDIR          # from the repository root
#   BENCH_ARGS="--only C5 --dtype bfloat16" bash bench/gpu_session.sh LOGDIR
#   SUITE="tests/test_conv2d.py" bash bench/gpu_session.sh LOGDIR   # a part of the suite
#   SUITE_ARGS="-k cuda" bash bench/gpu_session.sh LOGDIR            # pytest arguments for it
#
# Writes 8 files: build.log test_cuda.log suite.log memcheck.log racecheck.log bench.log
# bench.json summary.txt.
set -u
LOGDIR=${1:?usage: bash bench/gpu_session.sh LOGDIR}
mkdir -p "$LOGDIR"
PY=${PYTHON:-python3}
ROOT=$(pwd)
BENCH_ARGS=${BENCH_ARGS:---quick}
SUITE=${SUITE:-tests}
SUITE_ARGS=${SUITE_ARGS:-}
BUDGET=${BUDGET:-560}
export FASTCNN_CUDA_UNVERIFIED=1 PYTHONUNBUFFERED=1
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="$PATH:/usr/local/cuda/bin"
declare -a SUMMARY=()

# stage NAME LIMIT_S LOG CMD...: runs CMD under a time limit, output to LOG, and records
# the exit status (124: the time limit) and the wall time.
stage() {
  local name=$1 limit=$2 log=$3
  shift 3
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*" | tee "$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local line="$name: rc=$rc$([ $rc -eq 124 ] && echo ' (time limit)') in $((SECONDS - t0))s"
  SUMMARY+=("$line")
  echo "$line"
  return $rc
}

# The pytest summary line of a log ("N passed, M failed ... in Xs"), or a note that the run
# ended without one.
result_line() {
  local line
  line=$(grep -E "^(=+ )?[0-9]+ (passed|failed|skipped|error|deselected)" "$1" | tail -1)
  echo "${line:-no pytest summary (stopped early?)}"
}

{
  date -u
  nvidia-smi -L 2>&1
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))"
  nvcc --version | tail -1
} 2>&1 | tee "$LOGDIR/summary.txt"

# 1. Build: sm_90 only, ptxas resource report (registers, spills) in the log.
FASTCNN_CUDA=ON FASTCNN_CUDA_ARCHS=90 stage build 180 "$LOGDIR/build.log" \
  $PY -m pip install -v --no-build-isolation --no-deps . \
  -Ccmake.define.FASTCNN_CUDA_PTXAS_VERBOSE=ON -Cbuild.verbose=true
built=$?

if [ $built -eq 0 ]; then
  # Run from outside the source tree so that the installed package is imported.
  cd /tmp || exit 1
  $PY -c "import fastcnn; print(fastcnn.info())" >>"$LOGDIR/summary.txt" 2>&1

  # 2. The CUDA tests (parallel workers share the GPU).
  stage test_cuda 100 "$LOGDIR/test_cuda.log" \
    $PY -m pytest -q -p no:cacheprovider -rfE -n 6 "$ROOT/tests/test_cuda.py"

  # 3. compute-sanitizer over float32 cases (the other dtypes run the same index code), the
  # test functions in order of risk so that a stage stopped at its limit has covered the
  # conv kernels; no -x, so that a failing test does not end the sanitizer's coverage.
  # memcheck: every allocation its own cudaMalloc, so that an access past a tensor's end
  # leaves the allocation memcheck knows. racecheck: the kernels that share memory (conv
  # tiles, pooling and bias reductions).
  T="$ROOT/tests/test_cuda.py"
  export CUDA_MODULE_LOADING=LAZY
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 stage memcheck 90 "$LOGDIR/memcheck.log" \
    compute-sanitizer --tool memcheck --leak-check no --error-exitcode 99 \
    $PY -m pytest -q -p no:cacheprovider -k "(fp32 or splits) and not indices" \
    "$T::test_conv2d_forward" "$T::test_conv2d_backward" "$T::test_max_pool2d_backward" \
    "$T::test_max_pool2d_forward" "$T::test_global_avg_pool2d" "$T::test_relu_forward_backward" \
    "$T::test_conv2d_large_reduction_splits_deterministically"
  stage racecheck 50 "$LOGDIR/racecheck.log" \
    compute-sanitizer --tool racecheck --error-exitcode 99 \
    $PY -m pytest -q -p no:cacheprovider -k "fp32" \
    "$T::test_conv2d_forward" "$T::test_global_avg_pool2d" "$T::test_conv2d_backward"

  # 4. The benchmark (checks every result against torch before timing it).
  # shellcheck disable=SC2086
  stage bench 120 "$LOGDIR/bench.log" \
    $PY "$ROOT/bench/bench_gpu.py" $BENCH_ARGS --json "$LOGDIR/bench.json"

  # 5. The rest of the suite, in the time left (its CUDA cases go through fastcnn.ops).
  left=$((BUDGET - SECONDS))
  stage suite $((left > 30 ? left : 30)) "$LOGDIR/suite.log" \
    $PY -m pytest -q -p no:cacheprovider -rfE -n 8 --timeout 100 "$ROOT/$SUITE" \
    --ignore "$ROOT/tests/test_cuda.py" $SUITE_ARGS
  cd "$ROOT"
fi

{
  echo
  echo "== summary ($(date -u))"
  printf '%s\n' "${SUMMARY[@]}"
  if [ -f "$LOGDIR/build.log" ]; then
    echo "build: $(grep -c 'warning' "$LOGDIR/build.log") lines mention a warning;" \
      "$(grep -E 'bytes spill' "$LOGDIR/build.log" | grep -vc ' 0 bytes spill stores') kernels spill"
  fi
  for t in test_cuda suite memcheck racecheck; do
    [ -f "$LOGDIR/$t.log" ] && echo "$t: $(result_line "$LOGDIR/$t.log")"
  done
  for t in memcheck racecheck; do
    [ -f "$LOGDIR/$t.log" ] && echo "$t sanitizer: $(grep -E '(ERROR|RACECHECK) SUMMARY' \
      "$LOGDIR/$t.log" | tail -1)"
  done
  if [ -f "$LOGDIR/test_cuda.log" ]; then
    echo "test_cuda failures (first 15):"
    grep -E "^(FAILED|ERROR) " "$LOGDIR/test_cuda.log" | head -15
  fi
  if [ -f "$LOGDIR/bench.log" ]; then
    echo "bench:"
    grep -vE "^==" "$LOGDIR/bench.log" | tail -40
  fi
} 2>&1 | tee -a "$LOGDIR/summary.txt"
