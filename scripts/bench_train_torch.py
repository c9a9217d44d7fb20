#!/usr/bin/env python3
"""PyTorch side of `cargo bench -p neox-trainer --bench train`.

Trains a transformers GPTNeoXForCausalLM of the given shape with torch's
AdamW (weight decay on matrices only) and global-norm clipping, on the same
synthetic tokens as the neox bench, and prints one JSON line:
{"ms_per_step", "tokens_per_s", "peak_rss_kb", "loss"}.
Measured with torch 2.15.0 (CPU), transformers 5.24.0.
"""
import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM


def main():
    p = argparse.ArgumentParser()
    for name in ("layers", "hidden", "heads", "seq", "vocab", "ffn", "micro", "steps", "warmup", "threads"):
        p.add_argument(f"--{name}", type=int, required=True)
    for name in ("rotary-pct", "rotary-base", "lr", "beta1", "beta2", "eps", "weight-decay", "clip", "norm-eps"):
        p.add_argument(f"--{name}", type=float, required=True)
    p.add_argument("--parallel-residual", action="store_true")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    config = GPTNeoXConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        intermediate_size=a.ffn,
        hidden_act="gelu",
        rotary_pct=a.rotary_pct,
        rotary_emb_base=a.rotary_base,
        max_position_embeddings=a.seq,
        layer_norm_eps=a.norm_eps,
        use_parallel_residual=a.parallel_residual,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )
    model = GPTNeoXForCausalLM(config).train()
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr,
        betas=(a.beta1, a.beta2),
        eps=a.eps,
    )
    # The neox bench's tokens: i * 2654435761 mod 2^32 mod vocab.
    total = (a.micro * (a.warmup + a.steps) + 1) * a.seq + 1
    ids = (torch.arange(total, dtype=torch.int64) * 2654435761) % (1 << 32) % a.vocab
    timed, loss = 0.0, float("nan")
    for step in range(a.warmup + a.steps):
        start = step * a.micro * a.seq
        window = torch.stack([ids[start + i * a.seq : start + (i + 1) * a.seq + 1] for i in range(a.micro)])
        inputs, targets = window[:, :-1], window[:, 1:]
        t0 = time.perf_counter()
        logits = model(input_ids=inputs).logits
        l = F.cross_entropy(logits.reshape(-1, a.vocab), targets.reshape(-1))
        optim.zero_grad(set_to_none=True)
        l.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        optim.step()
        loss = l.item()
        if step >= a.warmup:
            timed += time.perf_counter() - t0
    per_step = timed / a.steps
    print(
        json.dumps(
            {
                "ms_per_step": per_step * 1e3,
                "tokens_per_s": a.micro * a.seq / per_step,
                "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "loss": loss,
            }
        )
    )


if __name__ == "__main__":
    main()
