#!/usr/bin/env bash
# The GPU numbers in README.md's "On a GPU" section, in one go, after the tests only a GPU runs
# (tests/test_cuda_graphs.py: replayed steps against ordinary ones) and the CPU step compiled ahead of
# time under that machine's torch (tests/test_compiled_step.py): the fast configs' time to accuracy
# (3 seeds in one process, so the first seed carries CUDA's start-up and the others show the warm
# time), `cnnlab bench --device cuda` with and without CUDA graphs, then cifar10_fast with torch.compile.
#
#   bash scripts/gpu_report.sh OUT_DIR [DATA_DIR]
#
# Needs a CUDA machine with the real data in DATA_DIR (default $CNNLAB_DATA_DIR, else ./data):
# MNIST/raw (uncompressed, for the bench's torchvision reference) and cifar-10-batches-py.
# Runs cnnlab with $PYTHON (default python3) as `-m cnnlab`, so an installed copy is not needed.
# Logs go to OUT_DIR: tests.log, repeat.log (mnist_cnn trained twice, in two processes, compared),
# fast.log, bench.log, compile.log, plus the bench's results.csv.
# QUICK=1 cuts every budget to a few steps (a dry run of the script itself, e.g. with DEVICE=cpu).
set -u
out=${1:?usage: gpu_report.sh OUT_DIR [DATA_DIR]}
export CNNLAB_DATA_DIR=${2:-${CNNLAB_DATA_DIR:-data}}
export CNNLAB_RUNS_DIR=${CNNLAB_RUNS_DIR:-runs/gpu}
export PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-160}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
mkdir -p "$out"

if [ "${QUICK:-0}" = 1 ]; then
  tiny="train.epochs=1 train.max_steps=3 dataset.train_subset=3000 dataset.test_subset=500"
  bench_args="--quick --cases fc,trashnet"
  plain_args="--quick --cases fc"
  seeds=2
else
  tiny=""
  bench_args="--repeats 2 --cases fc,cnn,lenet,trashnet,lenet99"
  plain_args="--repeats 1 --cases fc,cnn"
  seeds=3
fi

step() {  # step NAME LIMIT_S LOG COMMAND...: one step, time-limited, logged; a failure does not stop the rest
  local name=$1 limit=$2 log=$3; shift 3
  echo "=== $name: $*" | tee -a "$log"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
}

cells() {  # cells LOG: the study just run, one row per seed (train_seconds: training time, evaluation excluded)
  local dir
  dir=$(tail -n 2 "$1" | head -n 1)  # the study's last line, before step's own
  [ -f "$dir/cells.csv" ] && tee -a "$1" < "$dir/cells.csv"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  $py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
} | tee -a "$out/fast.log"

# and the CPU step compiled ahead of time under that machine's torch: torch 2.11 crashed loading it
# there (SIGSEGV); the first of these fails where it still does, the second checks the fallback
step gpu_tests 240 "$out/tests.log" $py -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py \
  tests/test_resume.py::test_a_checkpoint_from_a_machine_with_more_gpus_sets_the_cuda_streams_of_the_gpus_here \
  tests/test_resume.py::test_a_cpu_run_on_a_gpu_machine_does_not_start_cuda \
  "tests/test_compiled_step.py::test_the_compiled_step_trains_as_the_ordinary_one" \
  tests/test_compiled_step.py::test_a_step_that_crashes_when_loaded_is_never_loaded_and_torch_compile_trains_instead

# One seed, two processes: the same numbers (issue 2), timing columns aside.
for i in 1 2; do step "repeat_$i" 90 "$out/repeat.log" $py -m cnnlab train configs/mnist_cnn.yaml --device "$device" $tiny; done
$py - "$out/repeat.log" <<'PY' 2>&1 | tee -a "$out/repeat.log"
import sys, pandas as pd
lines = [l.strip() for l in open(sys.argv[1]) if l.strip()]
dirs = [lines[i - 1] for i, l in enumerate(lines) if l.startswith("=== repeat_") and " exit 0 " in l]
if len(dirs) != 2:
    sys.exit("repeat: a run failed, nothing to compare")
a, b = (pd.read_csv(f"{d}/metrics.csv").drop(columns=["epoch_seconds", "samples_per_sec", "eval_seconds"]) for d in dirs)
print("repeat: same numbers in both processes" if a.equals(b) else f"repeat: the numbers differ\n{a}\n{b}")
PY

# The aims: MNIST to 99% in under a second of training, CIFAR-10 to 94% in under 5 s.
step mnist_fast 90 "$out/fast.log" $py -m cnnlab compare configs/mnist_fast.yaml --seeds $seeds --device "$device" train.amp=bf16 $tiny
cells "$out/fast.log"
step cifar10_fast 150 "$out/fast.log" $py -m cnnlab compare configs/cifar10_fast.yaml --seeds $seeds --device "$device" train.amp=bf16 $tiny
cells "$out/fast.log"

step bench 240 "$out/bench.log" $py -m cnnlab bench --device "$device" $bench_args --markdown
step bench_no_graphs 90 "$out/bench.log" $py -m cnnlab bench --device "$device" $plain_args --no-cuda-graphs
cp "$CNNLAB_RUNS_DIR/bench/results.csv" "$out/" 2>/dev/null

step cifar10_fast_compile 150 "$out/compile.log" $py -m cnnlab compare configs/cifar10_fast.yaml --seeds 2 --device "$device" train.amp=bf16 train.compile=true $tiny
cells "$out/compile.log"
