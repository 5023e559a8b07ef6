"""The GPT-2 the PyTorch benchmarks train: pre-LN blocks, fused qkv, GELU tanh, tied LM head,
GPT-2's init (residual projections scaled by 1/sqrt(2 n_layer)). build(config) -> model."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SIZES = {"gpt2": (12, 12, 768, 50257, 1024), "gpt2-mini": (4, 4, 256, 50257, 256), "gpt2-nano": (2, 2, 64, 512, 64)}


def build(config):
    L, H, C, V, P = SIZES[config]
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.c_attn, self.attn_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
            att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
            x = x + self.attn_proj((att @ v).transpose(1, 2).reshape(B, T, C))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(P, C)
            self.h = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C)
            for name, p_ in self.named_parameters():
                if name.endswith("bias"):
                    nn.init.zeros_(p_)
                elif "ln" in name:
                    nn.init.ones_(p_)
                else:
                    std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                    nn.init.normal_(p_, 0.0, std)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.t()
            return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))



    return GPT()
