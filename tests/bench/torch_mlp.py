#!/usr/bin/python3
"""PyTorch peer of bench_mlp: the same MLP, optimizer, data and batches.

Run by bench_mlp as a co-process, so that its measurements interleave with
ours and a busy moment of the machine hits both:

    torch_mlp.py FASHION_MNIST_DIR THREADS

It loads Fashion-MNIST from the IDX files (features / 255, as zoomerge's
import scales them), prints "ready", then answers one line per command on
standard input:

    train STEPS START   -> "ok SECONDS LOSS_SUM"  STEPS SGD steps on the
                           batches of 128 rows starting at batch START
    infer ROWS BATCH PASSES -> "ok SECONDS CHECKSUM"  forward passes over the
                           first ROWS test rows in batches of BATCH, no grad
    quit

When torch cannot be imported it prints "skip REASON" and exits, so the
benchmark reports the reference as skipped instead of inventing it.
"""
import gzip
import os
import struct
import sys
import time

BATCH = 128


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xff
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return raw[4 + 4 * ndim:], dims


def main():
    fm, threads = sys.argv[1], int(sys.argv[2])
    try:
        import numpy as np
        import torch
    except Exception as e:  # ImportError, or a broken install
        print("skip cannot import numpy and torch (%s)" % str(e).split("\n")[0],
              flush=True)
        return 0
    torch.set_num_threads(threads)
    torch.manual_seed(1)

    def load(images, labels):
        data, dims = idx(os.path.join(fm, images))
        x = np.frombuffer(data, dtype=np.uint8).reshape(dims[0], -1)
        x = torch.from_numpy(x.astype(np.float32) / np.float32(255))
        lab, _ = idx(os.path.join(fm, labels))
        y = torch.from_numpy(np.frombuffer(lab, dtype=np.uint8)
                             .astype(np.int64))
        return x.contiguous(), y

    x, y = load("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    xt, _ = load("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(),
                          nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    lossf = nn.CrossEntropyLoss()
    nbatches = x.shape[0] // BATCH
    print("ready torch %s, %d threads" % (torch.__version__,
                                          torch.get_num_threads()),
          flush=True)
    for line in sys.stdin:
        w = line.split()
        if not w or w[0] == "quit":
            break
        if w[0] == "train":
            steps, start = int(w[1]), int(w[2])
            total = torch.zeros(())
            t0 = time.perf_counter()
            for s in range(steps):
                b = (start + s) % nbatches
                xb = x[b * BATCH:(b + 1) * BATCH]
                yb = y[b * BATCH:(b + 1) * BATCH]
                opt.zero_grad(set_to_none=True)
                loss = lossf(model(xb), yb)
                loss.backward()
                opt.step()
                total += loss.detach()
            t = time.perf_counter() - t0
            print("ok %.9f %.6f" % (t, float(total) * BATCH), flush=True)
        elif w[0] == "infer":
            rows, batch, passes = int(w[1]), int(w[2]), int(w[3])
            chk = 0.0
            with torch.no_grad():
                t0 = time.perf_counter()
                for _ in range(passes):
                    for r in range(0, rows, batch):
                        out = model(xt[r:min(rows, r + batch)])
                t = time.perf_counter() - t0
                chk = float(out[0, 0])
            print("ok %.9f %.6f" % (t, chk), flush=True)
        else:
            print("error unknown command %s" % w[0], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
