#!/usr/bin/env python3
"""The PyTorch side of scripts/bench-compare's training rows: SegCLIP training steps (all three
losses, backward, gradient clipping, one torch.optim.AdamW step, the logit-scale clamp) timed on
this machine's CPU, for a model size and batch that our `segclip bench --train-record` replays.

The step is the gradient-parity reference (scripts/fixtures/make_train_step.py, whose functions
are imported, on make_parity.py's modules), built here at a real size instead of the fixture's
tiny one. Every random choice of the step (Gumbel noise of both passes, the MAE keep indices,
superpixels) is an input, so both sides compute the same thing; `record` writes those inputs and
the initial parameters for ours, and the step-0 losses of both sides are compared.

  train_step.py record --config bundled|vit-b16 --batch B --out DIR
      DIR/record.json (model config, hyper-parameters, step-0 losses) and
      DIR/record.safetensors (init.<release key>, input.*), the layout of
      tests/fixtures/train_step/ that src/train/replay.rs reads.
  train_step.py time --record DIR --steps N --threads T --json OUT
      loads the record, takes one untimed step (its losses are step 0's), then N timed steps of
      the same batch; writes the median step time and samples/s.
  train_step.py report --torch A.json --ours B.json [--torch-rss KB --ours-rss KB] --md OUT.md
      the comparison row.

Sizes (src/model/config.rs): `bundled` is SegClipConfig::bundled() with configs/emoji.toml's
training settings (from scratch: nothing frozen, both learning rates 3e-4, CLIP's from-scratch
temperature); `vit-b16` is the release's ViT-B/16 with the release's fine-tuning settings
(embeddings frozen, 4e-3 for the new parts, 4e-6 for CLIP's). Captions are 32 tokens on both (the
release's max_words and configs/emoji.toml's data.context_length).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import OrderedDict

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "fixtures"))
import make_parity as mp  # noqa: E402
import make_train_step as ts  # noqa: E402

# SegClipConfig fields (src/model/config.rs), the Rust names.
CONFIGS = {
    "bundled": OrderedDict(
        image_size=96, patch_size=8, vision_width=128, vision_heads=4, vision_layers=5, group_after=4,
        num_centers=8, cross_layers=2, embed_dim=128, text_width=128, text_heads=2, text_layers=3,
        context_length=77, vocab_size=49408, mlp_ratio=4, decoder_width=64, decoder_heads=2,
        decoder_layers=2, mae_blocks=1, conv_stem=0, patchify_stem=0,
    ),
    "vit-b16": OrderedDict(
        image_size=224, patch_size=16, vision_width=768, vision_heads=12, vision_layers=12, group_after=10,
        num_centers=8, cross_layers=2, embed_dim=512, text_width=512, text_heads=8, text_layers=12,
        context_length=77, vocab_size=49408, mlp_ratio=4, decoder_width=384, decoder_heads=8,
        decoder_layers=3, mae_blocks=2, conv_stem=0, patchify_stem=0,
    ),
}
# The training settings of each size (see the module docstring).
SETTINGS = {
    "bundled": dict(lr_new=3e-4, lr_pretrained=3e-4, freeze_embeddings=False, logit_scale=math.log(1 / 0.07)),
    "vit-b16": dict(lr_new=4e-3, lr_pretrained=4e-6, freeze_embeddings=True, logit_scale=math.log(100.0)),
}
CAPTION_TOKENS = 32
SEED = 7


def configure(cfg):
    """make_parity's modules and make_train_step's functions read these module globals."""
    mp.CFG.clear()
    mp.CFG.update((k, cfg[k]) for k in ts.TRAIN_CFG)
    mp.MAE_DECODER_WIDTH = cfg["decoder_width"]
    mp.MAE_DECODER_DEPTH = cfg["decoder_layers"]
    mp.MAE_DECODER_HEADS = cfg["decoder_heads"]
    mp.MAE_BLOCKS = cfg["mae_blocks"]
    ts.TRAIN_CFG.clear()
    ts.TRAIN_CFG.update(mp.CFG)
    ts.DECODER_HEADS = cfg["decoder_heads"]


def make_inputs(cfg, batch, g):
    s, p, lc = cfg["image_size"], cfg["patch_size"], cfg["num_centers"]
    n = (s // p) ** 2
    sot, eot = cfg["vocab_size"] - 2, cfg["vocab_size"] - 1
    tokens = torch.zeros(batch, CAPTION_TOKENS, dtype=torch.int64)
    for r in range(batch):
        length = int(torch.randint(3, CAPTION_TOKENS - 1, (1,), generator=g))
        row = [sot] + torch.randint(1, sot, (length,), generator=g).tolist() + [eot]
        tokens[r, : len(row)] = torch.tensor(row)
    k = int((n + 1) * (1 - ts.MASK_RATIO)) - 1  # the release's count (make_train_step.make_inputs)
    # Superpixels: about as many regions per image as Felzenszwalb gives on the emoji scenes; the
    # loss's cost depends only on the patch count.
    return OrderedDict(
        images=torch.randn(batch, 3, s, s, generator=g),
        tokens=tokens,
        gumbel_uniform=torch.rand(batch, lc, n, generator=g).clamp_min(1e-10),
        gumbel_uniform_recon=torch.rand(batch, lc, k, generator=g).clamp_min(1e-10),
        keep=torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(batch)]).to(torch.int64),
        superpixels=torch.randint(0, 12, (batch, n), generator=g).to(torch.int64),
    )


def build(cfg, settings):
    configure(cfg)
    seg = mp.build_segclip(mp.build_clip(), seed=SEED)
    with torch.no_grad():
        seg.clip.logit_scale.fill_(settings["logit_scale"])
    seg.train()
    for name, p in seg.named_parameters():
        p.requires_grad_(ts.classify(name, settings["freeze_embeddings"])[0] in ("new", "pretrained"))
    return seg


def optimizer_for(seg, settings):
    params = dict(seg.named_parameters())
    groups = []
    for group in ("new", "pretrained"):
        for decay in (True, False):
            ps = [p for n, p in params.items() if p.requires_grad and ts.classify(n, settings["freeze_embeddings"]) == (group, decay)]
            groups.append(dict(params=ps, lr=settings[f"lr_{group}"], weight_decay=ts.WEIGHT_DECAY if decay else 0.0))
    # PyTorch's defaults otherwise (its own choice of the for-loop or foreach implementation).
    return torch.optim.AdamW(groups, betas=ts.BETAS, eps=ts.EPS)


def step(seg, optimizer, inputs):
    """One training step as the release's loop takes it (make_train_step.main, steps 1-6)."""
    optimizer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    losses, _, _ = ts.training_losses(seg, inputs)
    losses["total"].backward()
    step.gradients_s = time.perf_counter() - t0
    trained = [p for p in seg.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(trained, ts.CLIP_NORM)
    optimizer.step()
    with torch.no_grad():
        seg.clip.logit_scale.clamp_(max=math.log(ts.MAX_LOGIT_SCALE))
    return {k: v.item() for k, v in losses.items()}


def record(args):
    cfg, settings = CONFIGS[args.config], SETTINGS[args.config]
    torch.set_num_threads(os.cpu_count())
    seg = build(cfg, settings)
    inputs = make_inputs(cfg, args.batch, mp.gen(SEED + 1))
    os.makedirs(args.out, exist_ok=True)
    tensors = OrderedDict((f"init.{k}", v.detach().contiguous()) for k, v in seg.state_dict().items())
    tensors.update((f"input.{k}", v.contiguous()) for k, v in inputs.items())
    save_file(tensors, os.path.join(args.out, "record.safetensors"), metadata={"format": "pt"})
    meta = OrderedDict(
        description=f"scripts/bench/train_step.py record --config {args.config} --batch {args.batch}",
        name=args.config,
        model=cfg,
        batch=args.batch,
        optim=OrderedDict(
            lr_new=settings["lr_new"], lr_pretrained=settings["lr_pretrained"], weight_decay=ts.WEIGHT_DECAY,
            betas=list(ts.BETAS), eps=ts.EPS, clip_norm=ts.CLIP_NORM, freeze_embeddings=settings["freeze_embeddings"],
        ),
        loss=OrderedDict(gumbel_tau=ts.TAU, mask_ratio=ts.MASK_RATIO, weights=ts.LOSS_WEIGHTS),
    )
    with open(os.path.join(args.out, "record.json"), "w") as f:
        json.dump(meta, f, indent=1)
    n = sum(p.numel() for p in seg.parameters())
    print(f"{args.config}: {n / 1e6:.1f}M parameters, batch {args.batch}, written to {args.out}")


def time_steps(args):
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(False)
    with open(os.path.join(args.record, "record.json")) as f:
        meta = json.load(f)
    cfg, settings = meta["model"], SETTINGS[meta["name"]]
    seg = build(cfg, settings)
    tensors = load_file(os.path.join(args.record, "record.safetensors"))
    seg.load_state_dict(OrderedDict((k[5:], v) for k, v in tensors.items() if k.startswith("init.")))
    inputs = OrderedDict((k[6:], v) for k, v in tensors.items() if k.startswith("input."))
    del tensors
    optimizer = optimizer_for(seg, settings)
    batch = meta["batch"]
    losses0 = step(seg, optimizer, inputs)  # step 0, untimed (also the warm-up)
    print(f"PyTorch step 0: " + ", ".join(f"{k} {v:.6f}" for k, v in losses0.items()))
    times, gradient_times = [], []
    for i in range(args.steps):
        t0 = time.perf_counter()
        step(seg, optimizer, inputs)
        times.append(time.perf_counter() - t0)
        gradient_times.append(step.gradients_s)
        print(f"  step {i + 1}: {times[-1] * 1e3:.0f} ms")
    median = statistics.median(times)
    gradients = statistics.median(gradient_times)
    optimizer_s = statistics.median(t - g for t, g in zip(times, gradient_times))
    out = OrderedDict(
        engine=f"PyTorch {torch.__version__}", name=meta["name"], batch=batch, threads=args.threads, steps=args.steps,
        step_ms=[t * 1e3 for t in times], median_ms=median * 1e3,
        gradients_ms=gradients * 1e3, optimizer_ms=optimizer_s * 1e3, samples_per_s=batch / median, losses_step0=losses0,
    )
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"PyTorch: {median * 1e3:.0f} ms per step (gradients {gradients * 1e3:.0f} ms, optimiser {optimizer_s * 1e3:.0f} ms), "
          f"{batch / median:.2f} samples/s ({args.threads} threads)")


def report(args):
    with open(args.torch) as f:
        pt = json.load(f)
    with open(args.ours) as f:
        ours = json.load(f)
    ratio = ours["samples_per_s"] / pt["samples_per_s"]
    worst = max(abs(ours["losses_step0"][k] - v) / max(abs(v), 1e-6) for k, v in pt["losses_step0"].items() if k in ours["losses_step0"])
    rss = ""
    if args.torch_rss and args.ours_rss:
        rss = f" | {args.ours_rss / 1024:.0f} | {args.torch_rss / 1024:.0f}"
    parts = (f" | {ours['gradients_ms']:.0f} + {ours['optimizer_ms']:.0f}"
             f" | {pt['gradients_ms']:.0f} + {pt['optimizer_ms']:.0f}")
    row = (f"| {pt['name']} | {pt['batch']} | {pt['threads']} | {ours['samples_per_s']:.2f} | {pt['samples_per_s']:.2f} | "
           f"**{ratio:.2f}x** | {worst:.1e}{parts}{rss} |")
    print(row)
    if args.md:
        with open(args.md, "a") as f:
            f.write(row + "\n")
    if worst > 1e-3:
        sys.exit(f"the step-0 losses differ by {worst:.1e} relative: the two sides do not compute the same step")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--config", choices=sorted(CONFIGS), required=True)
    r.add_argument("--batch", type=int, required=True)
    r.add_argument("--out", required=True)
    t = sub.add_parser("time")
    t.add_argument("--record", required=True)
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--threads", type=int, default=os.cpu_count())
    t.add_argument("--json", required=True)
    p = sub.add_parser("report")
    p.add_argument("--torch", required=True)
    p.add_argument("--ours", required=True)
    p.add_argument("--torch-rss", type=float, default=None, help="peak RSS in KiB (/usr/bin/time -v)")
    p.add_argument("--ours-rss", type=float, default=None)
    p.add_argument("--md", default=None)
    args = ap.parse_args()
    {"record": record, "time": time_steps, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
