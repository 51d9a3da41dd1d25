"""Prompt Diffuser speed: prompt generation against one episode's rollout, and the few-shot
fine-tune wall time at Table 4's budget (20 epochs x 100 steps x batch 32).

    python benchmarks/diffuser_speed.py [--suite cheetah-vel] [--batch 64] [--finetune-steps 100] [--device cpu]

The PLM is reference-size (embed 128, 3 layers) with random weights and the generator has Table 4's
settings (N=100, 3x256 Mish MLP): speed does not depend on the weights. The fine-tune is timed over
``--finetune-steps`` steps; the Table 4 total is that
per-step time x 2000. Fine-tune steps are timed in float32 and with ``bf16_plm`` (the frozen
PLM under bfloat16 autocast inside L_DT), alternating. Needs the suite's test-task expert datasets
(``promptrl data <suite> --quality expert``). Ends with one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import promptrl
from promptrl.methods.diffuser import PromptDiffuser
from promptrl.methods.plm import PromptDT

TABLE4_STEPS = 20 * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="cheetah-vel")
    parser.add_argument("--batch", type=int, default=64, help="prompts generated in one call")
    parser.add_argument("--finetune-steps", type=int, default=100, help="fine-tune steps timed (Table 4: 2000)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = promptrl.load_suite(args.suite)
    task = suite.test_tasks[0]
    few_shot = suite.dataset(task, "expert", episodes=1)
    plm = PromptDT(suite, device=args.device, seed=0)
    plm.learn(few_shot, total_steps=1, progress_bar=False)  # sets state statistics; weights stay ~random
    pd = PromptDiffuser(plm, seed=0)

    pd.learn(few_shot, epochs=1, steps_per_epoch=2, progress_bar=False)  # warm-up (allocations, bounds)
    sync = torch.cuda.synchronize if pd.device.type == "cuda" else (lambda: None)
    # float32 and bf16_plm (the frozen PLM under bf16 autocast inside L_DT) alternate in 4 rounds,
    # so that both see the same machine load
    seconds = {False: 0.0, True: 0.0}
    rounds = 4
    chunk = max(1, args.finetune_steps // rounds)
    for _ in range(rounds):
        for bf16 in (False, True):
            pd.settings.bf16_plm = bf16
            sync()
            t = time.perf_counter()
            pd.learn(few_shot, epochs=1, steps_per_epoch=chunk, progress_bar=False)
            sync()
            seconds[bf16] += time.perf_counter() - t
    pd.settings.bf16_plm = False
    step_s, step_bf16_s = seconds[False] / (rounds * chunk), seconds[True] / (rounds * chunk)
    finetune_s, finetune_bf16_s = step_s * TABLE4_STEPS, step_bf16_s * TABLE4_STEPS

    gen = []
    for _ in range(3):
        sync()
        t = time.perf_counter()
        pd.generate_prompt(args.batch, task=task)
        sync()
        gen.append(time.perf_counter() - t)
    gen_s = statistics.median(gen)

    t = time.perf_counter()
    promptrl.evaluate(plm, suite, tasks=[task], n_episodes=1, prompt=few_shot)
    episode_s = time.perf_counter() - t

    rows = [
        ("prompt generation, N=100, batch %d" % args.batch, gen_s),
        ("rollout of one episode (%d steps)" % suite.horizon, episode_s),
        ("fine-tune step (batch 32, full reverse chain + PLM)", step_s),
        ("fine-tune step, bf16_plm=True", step_bf16_s),
        ("fine-tune, Table 4 budget (%d steps), per-step x 2000" % TABLE4_STEPS, finetune_s),
        ("fine-tune, Table 4 budget, bf16_plm=True", finetune_bf16_s),
    ]
    print(f"\n{args.suite} on {pd.device} ({torch.get_num_threads()} threads)")
    print("| measurement | seconds |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.3f} |")
    ratio = gen_s / episode_s
    print(
        f"\ngeneration / episode = {100 * ratio:.2f}% (goal <= 2%); fine-tune {finetune_s / 60:.1f} min, "
        f"{finetune_bf16_s / 60:.1f} min with bf16_plm (goal <= 3 min on 2 CPU cores)"
    )
    print(
        f"RESULT generation_over_episode={ratio:.4f} generation_s={gen_s:.4f} episode_s={episode_s:.3f} "
        f"finetune_step_s={step_s:.4f} finetune_table4_min={finetune_s / 60:.2f} "
        f"bf16_plm_speedup={step_s / step_bf16_s:.2f} finetune_table4_bf16_min={finetune_bf16_s / 60:.2f}"
    )


if __name__ == "__main__":
    main()
