"""PyTorch peer of bench_conv: the TensorFlow tutorial CNN (examples/cnn.yaml)
on random 1x28x28 inputs; prints "train SAMPLES_PER_S" (Adam, batch 128)
and "infer ROWS_PER_S" (batch 128, no grad).  argv: threads seconds."""
import sys, time
import torch

threads, seconds = int(sys.argv[1]), float(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 32, 5, padding="same"), torch.nn.ReLU(),
    torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(32, 64, 5, padding="same"), torch.nn.ReLU(),
    torch.nn.MaxPool2d(2), torch.nn.Flatten(),
    torch.nn.Linear(3136, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
x = torch.rand(128, 1, 28, 28)
y = torch.randint(0, 10, (128,))
loss_fn = torch.nn.CrossEntropyLoss()

def train_step():
    opt.zero_grad()
    loss_fn(net(x), y).backward()
    opt.step()

def best(fn, budget):
    fn()
    b, t_end = float("inf"), time.perf_counter() + budget
    while time.perf_counter() < t_end:
        t0 = time.perf_counter(); fn(); b = min(b, time.perf_counter() - t0)
    return b

print("train %.1f" % (128 / best(train_step, seconds)))
with torch.no_grad():
    print("infer %.1f" % (128 / best(lambda: net(x), seconds)))
