#!/usr/bin/python3
"""PyTorch peer of bench_e2e: the commands of issue 18 in process, on
tensors already in memory (no file read, no process start), one thread.

    torch_e2e.py

Prints one line "NAME SECONDS" per figure, each measured once after a
warm-up (bench_e2e calls it once per rep, between its own commands, and
keeps the best):

    predict-1-model     forward of 10,000 rows in batches of 1024, softmax
    predict-4-outputs   four models, each layer's outputs mixed with
                        weights 1/4 before the activation (predict --merge
                        outputs), batches of 1024
    predict-4-params    the four models' parameters averaged once, then one
                        forward as predict-1-model
    train-1-epoch       60,000 rows, batches of 128, SGD lr 0.01, shuffled

The MLP is 784-256-128-10 (relu); the data random (speed does not depend on
it).  When torch cannot be imported it prints "skip REASON" and exits.
"""
import sys
import time

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the machine
    print("skip %s" % e)
    sys.exit(0)

ROWS, TRAIN_ROWS, BATCH, TRAIN_BATCH = 10000, 60000, 1024, 128


def mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10))


def predict(model, x):
    with torch.no_grad():
        for b in range(0, ROWS, BATCH):
            torch.softmax(model(x[b:b + BATCH]), 1)


def predict_outputs(models, x):
    layers = [[m[i] for m in models] for i in (0, 2, 4)]
    with torch.no_grad():
        for b in range(0, ROWS, BATCH):
            h = x[b:b + BATCH]
            for j, ls in enumerate(layers):
                z = sum(0.25 * lin(h) for lin in ls)
                h = torch.relu(z) if j < 2 else z
            torch.softmax(h, 1)


def predict_params(models, x):
    merged = mlp()
    with torch.no_grad():
        for p, ps in zip(merged.parameters(),
                         zip(*[m.parameters() for m in models])):
            p.copy_(sum(ps) / len(ps))
    predict(merged, x)


def epoch(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    perm = torch.randperm(TRAIN_ROWS)
    for b in range(0, TRAIN_ROWS, TRAIN_BATCH):
        idx = perm[b:b + TRAIN_BATCH]
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()


def timed(fn, *args):
    fn(*args)                      # warm-up
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main():
    torch.set_num_threads(1)
    torch.manual_seed(1)
    models = [mlp() for _ in range(4)]
    x = torch.rand(ROWS, 784)
    xt = torch.rand(TRAIN_ROWS, 784)
    yt = torch.randint(0, 10, (TRAIN_ROWS,))
    print("predict-1-model %.6f" % timed(predict, models[0], x))
    print("predict-4-outputs %.6f" % timed(predict_outputs, models, x))
    print("predict-4-params %.6f" % timed(predict_params, models, x))
    t0 = time.perf_counter()
    epoch(models[0], xt, yt)
    print("train-1-epoch %.6f" % (time.perf_counter() - t0))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
