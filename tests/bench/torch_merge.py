#!/usr/bin/python3
"""PyTorch peer of bench_predict: the same layer-wise merge of K MLPs.

    torch_merge.py K BATCH ROWS THREADS REPS

K models 784-256-128-10 (relu), their weights of each layer stacked
[K*out, in] once, as zoomerge does; per batch of BATCH rows one addmm
gives all K pre-activations, which are mixed with per-batch weights
before the activation: h = relu(sum_i w_i (h W_i^T + b_i)).  Prints
"ok SECONDS" (best of REPS passes over ROWS rows), or "skip REASON"
when torch cannot be imported.
"""
import sys
import time


def main():
    k, batch, rows, threads, reps = (int(a) for a in sys.argv[1:6])
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means skip
        print("skip " + str(e).replace("\n", " "))
        return
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    sizes = [784, 256, 128, 10]
    layers = []
    for i in range(3):
        w = torch.randn(k * sizes[i + 1], sizes[i]) * (2.0 / sizes[i]) ** 0.5
        b = torch.zeros(k * sizes[i + 1])
        layers.append((w.contiguous(), b, sizes[i + 1]))
    mix = torch.full((k,), 1.0 / k)
    x = torch.rand(batch, 784)
    best = None
    with torch.inference_mode():
        for _ in range(reps):
            t0 = time.perf_counter()
            done = 0
            while done < rows:
                h = x
                for li, (w, b, out) in enumerate(layers):
                    z = torch.addmm(b, h, w.t()).view(batch, k, out)
                    h = torch.einsum("nko,k->no", z, mix)
                    if li < 2:
                        h = torch.relu(h)
                torch.softmax(h, dim=1)
                done += batch
            t = time.perf_counter() - t0
            best = t if best is None or t < best else best
    print("ok %.6f" % best)


main()
