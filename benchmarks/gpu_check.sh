#!/usr/bin/env bash
# The paper's Table 3 row (first-cycle growres_resnet14, last-cycle growres_resnet50, multi-level growres_resnet50i)
# on the full Fashion-MNIST training set and test set, on one GPU, with bf16 autocast, channels-last and
# torch.compile: `benchmarks/plateau.py --size gpu` (16 of the paper's 160 epochs; about 8 minutes on one H200,
# half of it compiling). It writes the plateau benchmark's JSON schema.
#
# The GPU machine reaches no network and has no `datasets` package, so what it needs travels with the tree:
#   bash benchmarks/gpu_check.sh --prepare      # here: Fashion-MNIST's IDX files and the missing wheels into .gpu_check/
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # there (carry .gpu_check): results to OUT_DIR/time_saved_gpu.*
#   bash benchmarks/gpu_check.sh --cpu-smoke OUT_DIR   # the same code path on a CPU, tiny (the slow tests run it)
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=.gpu_check  # ignored by git (.gitignore)
FASHION_MNIST=${GROWRES_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$STAGE/fashion-mnist" "$STAGE/wheels"
    cp "$FASHION_MNIST"/*-ubyte.gz "$STAGE/fashion-mnist/"
    # `datasets` and the two of its requirements the GPU machine's image lacks, for its Python 3.12
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$STAGE/wheels" "datasets==$(python -c 'import datasets; print(datasets.__version__)')" dill multiprocess
    du -sh "$STAGE"
    exit 0
fi

size=gpu
if [ "${1:-}" = "--cpu-smoke" ]; then
    size=gpu-smoke
    shift
fi
out=${1:-${OUT:-benchmarks/results}}
mkdir -p "$out"
if [ -d "$STAGE/fashion-mnist" ]; then
    export GROWRES_FASHION_MNIST_DIR="$PWD/$STAGE/fashion-mnist"
fi
if ! python3 -c "import datasets" 2>/dev/null; then  # the GPU machine: the carried wheels, and growres from the tree
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$STAGE"/wheels/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export GROWRES_CACHE="${GROWRES_CACHE:-/tmp/growres-cache}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
python3 benchmarks/plateau.py --size "$size" --seeds 1 --output "$out/time_saved_$size"
