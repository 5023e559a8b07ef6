#!/usr/bin/env python3
"""torch_optim_test.py - loom's optimizer plugins against PyTorch on the same numbers: the
parameters and five steps of gradients (with a changing learning rate, a clip coefficient and,
where the rule has one, the scheduler's momentum) go through optim_replay (the plugin, loaded by
the core loader) and through torch.optim.Adagrad / RMSprop / AdamW with HF's two parameter
groups (weight decay on the first, none on the second), in float32. Lion, which torch lacks,
is the paper's rule written here in torch ops. Parameters and every state agree to float
round-off (torch's vectorised loops fuse multiply-adds where loom's do not). Needs python3-torch
(exit 77, skipped, without it); usage: torch_optim_test.py OPTIM_REPLAY
"""
import math
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy
    import torch
except ImportError:  # Debian's python3-torch lives with /usr/bin/python3
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("torch_optim_test.py: SKIPPED: python3-torch is not installed")
    sys.exit(77)

N_DECAY, N_NODECAY, WD = 1000, 37, 0.1
# (lr, clip coefficient, scheduler momentum or None) of each step
STEPS = [(1e-2, 1.0, None), (2e-2, 0.5, None), (5e-3, 1.0, 0.5), (1e-2, 1.0, None), (3e-2, 0.7, None)]


class LionRef:
    """Lion (Chen et al. 2023) in torch ops: decoupled decay, the sign of the interpolation,
    then the momentum; the same interface as a torch optimizer's group and state."""

    def __init__(self, groups, betas):
        self.param_groups = [dict(g, betas=betas) for g in groups]
        self.state = {}

    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                m = self.state.setdefault(p, {"exp_avg": torch.zeros_like(p)})["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


def make_torch(name, groups, kv):
    """The torch optimizer HF's Trainer builds for `name` (lr set per step), and the scheduler
    momentum's key in its groups."""
    f = {k: float(v) for k, v in kv.items() if k not in ("centered",)}
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=1.0, **f), None
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=1.0, centered=kv.get("centered") == "true", **f), "momentum"
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=1.0, betas=(f["beta1"], f["beta2"]), eps=f["eps"]), "betas"
    return LionRef(groups, (f["beta1"], f["beta2"])), "betas"


def run_case(replay, tmp, name, kv, state_names):
    torch.manual_seed(len(name) * 7 + len(kv))
    n = N_DECAY + N_NODECAY
    # torch creates RMSprop's buffer only when momentum is on from the start, so a scheduler's
    # momentum is given only where the configuration has one.
    steps = [(lr, clip, None if name == "rmsprop" and "momentum" not in kv else mom) for lr, clip, mom in STEPS]
    init = (torch.rand(n) - 0.5).float()
    grads = [(torch.randn(n) * 0.3).float() for _ in STEPS]
    w, b = init[:N_DECAY].clone(), init[N_DECAY:].clone()
    opt, momentum_key = make_torch(name, [{"params": [w], "weight_decay": WD}, {"params": [b], "weight_decay": 0.0}],
                                   kv)
    own = {g_i: dict(g) for g_i, g in enumerate(opt.param_groups)}
    want = []
    for (lr, clip, mom), g in zip(steps, grads):
        for i, group in enumerate(opt.param_groups):
            group["lr"] = lr
            if momentum_key == "momentum":
                group["momentum"] = own[i]["momentum"] if mom is None else mom
            elif momentum_key == "betas":
                group["betas"] = own[i]["betas"] if mom is None else (mom, own[i]["betas"][1])
        w.grad, b.grad = g[:N_DECAY] * clip, g[N_DECAY:] * clip   # clip_grad_norm_ scales the grads
        opt.step()
        states = [torch.cat([opt.state[w][s], opt.state[b][s]]) for s in state_names]
        want.append((torch.cat([w, b]).clone(), [s.clone() for s in states]))

    src, dst = os.path.join(tmp, f"{name}.in"), os.path.join(tmp, f"{name}.out")
    with open(src, "wb") as f:
        f.write(struct.pack("<3qd", N_DECAY, N_NODECAY, len(STEPS), WD) + init.numpy().tobytes())
        for t, ((lr, clip, mom), g) in enumerate(zip(steps, grads), 1):
            f.write(struct.pack("<q3d", t, lr, clip, math.nan if mom is None else mom) + g.numpy().tobytes())
    args = [x for kvp in kv.items() for x in kvp]
    p = subprocess.run([replay, name, src, dst, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"optim_replay {name} {args}: exit {p.returncode}\n{p.stderr}")
    with open(dst, "rb") as f:
        blob = f.read()
    got = numpy.frombuffer(blob, dtype="<f4")
    slots = len(got) // (len(STEPS) * n) - 1
    bad = 0
    for j, (param, states) in enumerate(want):
        base = j * (slots + 1) * n
        arrays = [("param", param)] + list(zip(state_names, states))
        for label, ref in arrays:
            slot = 0 if label == "param" else 1 + plugin_slot(name, label)
            mine = torch.from_numpy(got[base + slot * n:base + (slot + 1) * n].copy())
            err = (mine.double() - ref.double()).abs() - (1e-6 + 2e-5 * ref.double().abs())
            if (err > 0).any():
                i = int(err.argmax())
                print(f"FAIL {name} {kv} step {j + 1} {label}[{i}]: loom {float(mine[i])!r} torch {float(ref[i])!r}")
                bad += 1
    moved = float((torch.from_numpy(got[(len(STEPS) - 1) * (slots + 1) * n:][:n].copy()) - init).abs().max())
    if moved < 1e-3:
        print(f"FAIL {name} {kv}: the parameters did not move ({moved})")
        bad += 1
    print(f"{'ok  ' if not bad else 'FAIL'} {name} {kv}")
    return bad


def plugin_slot(name, state):
    return {"adagrad": ["sum"], "rmsprop": ["square_avg", "momentum_buffer", "grad_avg"], "adamw":
            ["exp_avg", "exp_avg_sq"], "lion": ["exp_avg"]}[name].index(state)


def main():
    replay = sys.argv[1]
    cases = [
        ("adagrad", {}, ["sum"]),                                          # HF's: lr only, torch's defaults
        ("adagrad", {"lr_decay": "0.1", "initial_accumulator_value": "0.2", "eps": "1e-6"}, ["sum"]),
        ("rmsprop", {}, ["square_avg"]),                                   # HF's: lr only
        ("rmsprop", {"momentum": "0.9", "alpha": "0.9", "eps": "1e-6"}, ["square_avg", "momentum_buffer"]),
        ("rmsprop", {"momentum": "0.5", "centered": "true"}, ["square_avg", "momentum_buffer", "grad_avg"]),
        ("lion", {"beta1": "0.9", "beta2": "0.999"}, ["exp_avg"]),          # HF's: betas = adam_beta1/2
        ("lion", {"beta1": "0.95", "beta2": "0.98"}, ["exp_avg"]),
        # The reference itself: loom's adamw against torch.optim.AdamW, as every alias runs it.
        ("adamw", {"beta1": "0.9", "beta2": "0.999", "eps": "1e-8"}, ["exp_avg", "exp_avg_sq"]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        bad = sum(run_case(replay, tmp, *case) for case in cases)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
