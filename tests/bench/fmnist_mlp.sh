#!/bin/sh
# Fashion-MNIST test accuracy of the 784-256-128-10 MLP trained by
# train-step for 10 epochs (Adam, cosine schedule), next to the published
# MLP baseline (0.8833), and the wall time of the whole command line run.
set -eu
BIN=${ZM_BIN:?}
FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
TRAIN=${ZM_BENCH_TRAIN:?}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/zm-bench-mlp.XXXXXX")
trap 'rm -rf "$T"' EXIT

"$BIN/tensor" import --from idx --images "$FM/t10k-images-idx3-ubyte.gz" \
	--labels "$FM/t10k-labels-idx1-ubyte.gz" -o "$T/test.safetensors.gz"
"$BIN/zoo-add" --zoo "$T/zoo" --name mlp --arch "$SRC/examples/mlp.yaml" --seed 1 2>/dev/null
t0=$(date +%s.%N)
"$BIN/train-step" --zoo "$T/zoo" --model mlp --epochs 10 --optimizer adam \
	--lr 0.001 --schedule cosine --val-fraction 0 --apply --quiet \
	--log-every 0 --log "$T/log.jsonl" "$TRAIN"
t1=$(date +%s.%N)
"$BIN/predict" --zoo "$T/zoo" --model mlp --metrics "$T/m.yaml" \
	--output stream -o /dev/null "$T/test.safetensors.gz"
acc=$(sed -n 's/^accuracy: //p' "$T/m.yaml")
sps=$(sed -n 's/.*"samples_per_s":\([0-9.]*\).*/\1/p' "$T/log.jsonl" | sort -n | tail -1)
echo "bench: fmnist-mlp-test-accuracy: $acc (published MLP baseline: 0.8833, ratio $(awk -v a="$acc" 'BEGIN { printf "%.3f", a / 0.8833 }'))"
echo "# fmnist-mlp: 10 epochs in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s, best epoch $sps samples/s (1 thread); speed against PyTorch is bench_mlp's"
