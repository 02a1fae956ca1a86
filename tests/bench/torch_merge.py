#!/usr/bin/python3
"""PyTorch peer of bench_predict: the same layer-wise merge of K MLPs.

    torch_merge.py K BATCH ROWS THREADS REPS [wall|cpu]

K models 784-256-128-10 (relu), their weights of each layer stacked
[K*out, in] once, as zoomerge does; per batch of BATCH rows one addmm
gives all K pre-activations (bias included), which are mixed with
per-batch weights before the activation: h = relu(sum_i w_i (h W_i^T +
b_i)), then softmax.  That is zoomerge's --merge outputs --merge-point pre
with per-batch weights.  The mix is written three ways (einsum, a batched
matrix-vector product, a broadcast multiply and sum); they are checked to
agree and timed in turn, and the best is torch's figure, so that the
comparison is against torch's fastest formulation of the same work.
Prints "ok SECONDS VARIANT" (best of REPS passes over ROWS rows), or
"skip REASON" when torch cannot be imported.  cpu times by process CPU
time (time.process_time) instead of wall time, as bench_predict's
ZM_BENCH_CLOCK=cpu.
"""
import sys
import time


def main():
    k, batch, rows, threads, reps = (int(a) for a in sys.argv[1:6])
    clock = time.perf_counter
    if len(sys.argv) > 6 and sys.argv[6] == "cpu":
        clock = time.process_time
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
        b = torch.randn(k * sizes[i + 1]) * 0.1
        layers.append((w.contiguous(), b, sizes[i + 1]))
    mix = torch.full((k,), 1.0 / k)
    mix3 = mix.view(1, k, 1)
    x = torch.rand(batch, 784)

    def mix_einsum(z):
        return torch.einsum("nko,k->no", z, mix)

    def mix_matvec(z):
        return torch.matmul(mix, z)

    def mix_mulsum(z):
        return (z * mix3).sum(1)

    def forward(mixer):
        h = x
        for li, (w, b, out) in enumerate(layers):
            z = torch.addmm(b, h, w.t()).view(batch, k, out)
            h = mixer(z)
            if li < 2:
                h = torch.relu_(h)
        return torch.softmax(h, dim=1)

    variants = [("einsum", mix_einsum), ("matvec", mix_matvec),
                ("mulsum", mix_mulsum)]
    best = {}
    with torch.inference_mode():
        ref = forward(mix_einsum)
        for name, mixer in variants:
            if not torch.allclose(forward(mixer), ref, atol=1e-5):
                print("skip variant %s disagrees" % name)
                return
        for _ in range(reps):
            for name, mixer in variants:
                t0 = clock()
                done = 0
                while done < rows:
                    forward(mixer)
                    done += batch
                t = clock() - t0
                if name not in best or t < best[name]:
                    best[name] = t
    name = min(best, key=best.get)
    print("ok %.6f %s" % (best[name], name))


main()
