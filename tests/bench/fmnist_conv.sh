#!/bin/sh
# Fashion-MNIST test accuracy of the TensorFlow tutorial's convolutional
# network (examples/cnn.yaml) trained by train-step (Adam, cosine schedule,
# ZM_CONV_EPOCHS epochs, default 6), next to the published figure for that
# network (0.916), and the wall time of the training command.
set -eu
BIN=${ZM_BIN:?}
FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
EPOCHS=${ZM_CONV_EPOCHS:-6}
THREADS=${ZM_CONV_THREADS:-1}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/zm-bench-cnn.XXXXXX")
trap 'rm -rf "$T"' EXIT

"$BIN/tensor" import --from idx --images "$FM/train-images-idx3-ubyte.gz" \
	--labels "$FM/train-labels-idx1-ubyte.gz" --shape image \
	-o "$T/train.safetensors.gz"
"$BIN/tensor" import --from idx --images "$FM/t10k-images-idx3-ubyte.gz" \
	--labels "$FM/t10k-labels-idx1-ubyte.gz" --shape image \
	-o "$T/test.safetensors.gz"
"$BIN/zoo-add" --zoo "$T/zoo" --name cnn --arch "$SRC/examples/cnn.yaml" --seed 1 2>/dev/null
t0=$(date +%s.%N)
"$BIN/train-step" --zoo "$T/zoo" --model cnn --epochs "$EPOCHS" \
	--optimizer adam --lr 0.001 --schedule cosine --batch-size 128 \
	--val-fraction 0 --threads "$THREADS" --apply --quiet \
	--log-every 0 --log "$T/log.jsonl" "$T/train.safetensors.gz"
t1=$(date +%s.%N)
"$BIN/predict" --zoo "$T/zoo" --model cnn --metrics "$T/m.yaml" \
	--output stream -o /dev/null "$T/test.safetensors.gz"
acc=$(sed -n 's/^accuracy: //p' "$T/m.yaml")
sps=$(sed -n 's/.*"samples_per_s":\([0-9.]*\).*/\1/p' "$T/log.jsonl" | sort -n | tail -1)
echo "bench: fmnist-cnn-test-accuracy: $acc (published TF tutorial CNN: 0.916, ratio $(awk -v a="$acc" 'BEGIN { printf "%.3f", a / 0.916 }'))"
echo "# fmnist-cnn: $EPOCHS epochs in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s, best epoch $sps samples/s ($THREADS thread(s)); speed against PyTorch is bench_conv's"
