#!/bin/sh
# Fashion-MNIST merge experiment (run by make bench): two models trained
# by train-step from one common base on disjoint label sets (classes 0-4
# and 5-9, split by `slice`), merged with --method linear, ties and dare;
# every model's test accuracy (10000 test images, via predict) is printed,
# the inputs' next to the merges'.  Lines:
#   bench: fmnist-merge-METHOD-accuracy: A (best input: B, ratio R)
set -u
BIN=${ZM_BIN:?ZM_BIN must name the directory of the programs}
FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
EPOCHS=${ZM_BENCH_FMNIST_EPOCHS:-2}
if [ ! -r "$FM/train-images-idx3-ubyte.gz" ]; then
	echo "bench: fmnist-merge: skipped: no Fashion-MNIST in $FM"
	exit 0
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/zm-fmnist-merge.XXXXXX")
trap 'rm -rf "$T"' EXIT
set -e
"$BIN/tensor" import --from idx --images "$FM/train-images-idx3-ubyte.gz" \
	--labels "$FM/train-labels-idx1-ubyte.gz" -o "$T/train.st.gz"
"$BIN/tensor" import --from idx --images "$FM/t10k-images-idx3-ubyte.gz" \
	--labels "$FM/t10k-labels-idx1-ubyte.gz" -o "$T/test.st.gz"
cat >"$T/rules.yaml" <<'YAML'
mode: partition
slices:
  - {name: low, where: {label: [0, 1, 2, 3, 4]}}
  - {name: high, default: true}
YAML
"$BIN/slice" --rules "$T/rules.yaml" --out-dir "$T/slices" "$T/train.st.gz" >/dev/null
cat >"$T/arch.yaml" <<'YAML'
input: [784]
layers:
  - {name: fc1, units: 128, activation: relu, group: features}
  - {name: fc2, units: 64, activation: relu, group: features}
  - {name: out, units: 10, group: head}
YAML
Z=$T/zoo
# The common base: a little training on everything, so that the task
# vectors start from a shared basin (as fine-tuning from a pretrained
# model does).
"$BIN/zoo-add" --zoo "$Z" --name base --arch "$T/arch.yaml" --seed 1 2>/dev/null
"$BIN/train-step" --zoo "$Z" --model base --epochs 1 --lr 0.05 --seed 1 \
	--apply --quiet "$T/train.st.gz" 2>/dev/null
for m in low high; do
	"$BIN/zoo-add" --zoo "$Z" --name $m "$Z/$(sed -n 's/^ *file: \(models\/base\/.*\)/\1/p' "$Z/zoo.yaml" | tail -1)" 2>/dev/null
	"$BIN/train-step" --zoo "$Z" --model $m --epochs "$EPOCHS" --lr 0.05 \
		--seed 2 --apply --quiet "$T/slices/$m.safetensors.gz" 2>/dev/null
done
"$BIN/merge" --quiet --method linear --zoo "$Z" -o "$T/linear.gz" low high
"$BIN/merge" --quiet --method ties --zoo "$Z" --base base --density 0.2 -o "$T/ties.gz" low high
"$BIN/merge" --quiet --method dare --zoo "$Z" --base base --drop 0.9 --seed 1 -o "$T/dare.gz" low high
for m in linear ties dare; do
	"$BIN/zoo-add" --zoo "$Z" --name $m "$T/$m.gz" 2>/dev/null
done
acc() {
	"$BIN/predict" --zoo "$Z" --model "$1" --metrics "$T/$1.yaml" \
		"$T/test.st.gz" >/dev/null 2>&1
	sed -n 's/^accuracy: //p' "$T/$1.yaml"
}
a_base=$(acc base); a_low=$(acc low); a_high=$(acc high)
best=$(awk -v a="$a_low" -v b="$a_high" 'BEGIN { print (a > b ? a : b) }')
echo "bench: fmnist-merge-inputs: base $a_base, low (classes 0-4) $a_low, high (classes 5-9) $a_high"
for m in linear ties dare; do
	a=$(acc $m)
	echo "bench: fmnist-merge-$m-accuracy: $a (best input: $best, ratio $(awk -v a="$a" -v b="$best" 'BEGIN { printf "%.2f", a / b }'))"
done
