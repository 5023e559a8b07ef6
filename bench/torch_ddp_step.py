"""PyTorch DDP on the gloo backend, N processes on this machine: the peer of bench/ddp_step.
The same GPT-2 and step as torch_gpt2_step.py (AdamW lr 1e-4, random tokens, a new batch every
step), per-rank batch B. Rank 0 prints one JSON line.

  torch_ddp_step.py --config gpt2-mini --B 8 --T 64 --world 2 --threads 1 --warmup 3 --steps 10
"""
import argparse
import json
import os
import resource
import socket
import statistics
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--config", default="gpt2-mini")
p.add_argument("--B", type=int, default=8)
p.add_argument("--T", type=int, default=64)
p.add_argument("--world", type=int, default=2)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--zero1", action="store_true", help="ZeroRedundancyOptimizer(AdamW) instead of AdamW")
a = p.parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
os.environ["OMP_NUM_THREADS"] = str(a.threads)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt2 import SIZES, build  # noqa: E402


def worker(rank, port):
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=a.world)
    torch.manual_seed(1234)
    model = torch.nn.parallel.DistributedDataParallel(build(a.config))
    if a.zero1:
        from torch.distributed.optim import ZeroRedundancyOptimizer
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, lr=1e-4,
                                      betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    V = SIZES[a.config][3]
    gen = torch.Generator().manual_seed(1234 + rank)
    times = []
    for step in range(a.warmup + a.steps):
        tokens = torch.randint(0, V, (a.B, a.T + 1), generator=gen)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        opt.step()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    if rank == 0:
        print(json.dumps(dict(side="torch-zero1" if a.zero1 else "torch-ddp", config=a.config, world=a.world, B=a.B, T=a.T, threads=a.threads,
                              ms_median=1e3 * median, tok_per_s_median=a.world * a.B * a.T / median,
                              peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                              torch=torch.__version__)), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port,), nprocs=a.world)
