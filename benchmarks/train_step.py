"""Training-step time of ``PromptDT`` against a Decision Transformer of the same size built on
Hugging Face ``transformers`` GPT-2 (the reference implementation's backbone).

    pip install transformers   # benchmark-only dependency
    python benchmarks/train_step.py [--batch 560] [--repeats 5] [--threads 2] [--device cpu]

Both models: embed 128, 3 layers, 1 head, MLP 512 with ReLU, dropout 0.1, AdamW, a prompt of 5
steps and a history of 20 (75 tokens per sequence); the batch is the reference one (16 sequences x
35 training tasks = 560). Each is timed in float32 and under bf16 autocast, alternating the two
models so that both see the same machine load. Ends with one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from promptrl.data.windows import Segment
from promptrl.methods.plm import bf16_is_fast
from promptrl.nn.transformer import PromptDTConfig, PromptDTNetwork, TokenEmbedding

OBS, ACT, K, KP = 17, 6, 20, 5


class GPT2DecisionTransformer(nn.Module):
    """The reference shape: token embeddings as in Prompt-DT, GPT-2 (no position embeddings used) as backbone."""

    def __init__(self, cfg: PromptDTConfig):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        self.embed, self.prompt_embed = TokenEmbedding(cfg), TokenEmbedding(cfg)
        self.ln = nn.LayerNorm(cfg.embed_dim)
        gpt_cfg = GPT2Config(
            n_embd=cfg.embed_dim,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_inner=4 * cfg.embed_dim,
            activation_function="relu",
            resid_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            n_positions=1024,
            vocab_size=1,
        )
        self.gpt = GPT2Model(gpt_cfg)
        self.head = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.act_dim), nn.Tanh())

    def forward(self, history: Segment, prompt: Segment) -> torch.Tensor:
        B = history.states.shape[0]
        x = self.ln(torch.cat([self.prompt_embed(prompt), self.embed(history)], 1))  # (B, 3(K*+K), E)
        mask = torch.cat([prompt.mask, history.mask], 1).repeat_interleave(3, 1)
        h = self.gpt(
            inputs_embeds=x, attention_mask=mask, position_ids=torch.zeros_like(mask, dtype=torch.long)
        ).last_hidden_state
        return self.head(h[:, -3 * K :].reshape(B, K, 3, -1)[:, :, 1])


def batch(n: int, device: torch.device) -> tuple[Segment, Segment]:
    g = torch.Generator().manual_seed(0)

    def seg(L: int) -> Segment:
        arrays = (
            torch.randn(n, L, OBS, generator=g),
            torch.rand(n, L, ACT, generator=g) * 2 - 1,
            torch.randn(n, L, 1, generator=g),
            torch.randint(0, 200, (n, L), generator=g),
            torch.ones(n, L),
        )
        return Segment(*(a.to(device) for a in arrays))

    return seg(K), seg(KP)


def step_time(model: nn.Module, opt: torch.optim.Optimizer, data: tuple[Segment, Segment], bf16: bool) -> float:
    history, prompt = data
    device = history.states.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = (model(history, prompt) - history.actions).pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sync()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=560)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    cfg = PromptDTConfig(OBS, ACT, context=K, prompt_length=KP)
    torch.manual_seed(0)
    models = {
        "promptrl PromptDT (SDPA)": PromptDTNetwork(cfg).to(device),
        "transformers GPT-2 DT": GPT2DecisionTransformer(cfg).to(device),
    }
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    data = batch(args.batch, device)
    times: dict[tuple[str, bool], list[float]] = {}
    for bf16 in (False, True):
        for name in models:
            step_time(models[name], opts[name], data, bf16)  # warm-up
        for _ in range(args.repeats):
            for name in models:
                times.setdefault((name, bf16), []).append(step_time(models[name], opts[name], data, bf16))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, torch threads {args.threads}"
    print(f"batch {args.batch} sequences x {3 * (K + KP)} tokens, {where}, median of {args.repeats}")
    print(
        f"PromptDT(bf16=None) picks bf16 autocast here: {bf16_is_fast(device)} (see promptrl.methods.plm.bf16_is_fast)\n"
    )
    print("| model | parameters | float32 s/step | bf16 autocast s/step |")
    print("|---|---|---|---|")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, m in models.items():
        print(
            f"| {name} | {sum(p.numel() for p in m.parameters()):,} | {med[(name, False)]:.4f} | {med[(name, True)]:.4f} |"
        )
    ours, ref = list(models)
    print(
        f"\nRESULT speedup_fp32={med[(ref, False)] / med[(ours, False)]:.2f} speedup_bf16={med[(ref, True)] / med[(ours, True)]:.2f}"
    )


if __name__ == "__main__":
    main()
