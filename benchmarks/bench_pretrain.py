"""Training throughput of the pre-training recipes (one optimiser step = forward + backward + AdamW).

    python benchmarks/bench_pretrain.py                      # full-size M2D, M2D-S, Dasheng-Base, batch 8, CPU
    python benchmarks/bench_pretrain.py --recipes m2d --batch 32 --device cuda --precision bf16
    python benchmarks/bench_pretrain.py --official-m2d /tmp/official/m2d/m2d   # also time the official M2DViT

    python benchmarks/bench_pretrain.py --recipes melhubert,armhubert,maskhubert,starhubert --batch 4

Batches are synthetic (random log-mel / fbank / waveforms of the training crop size, made by the
recipe's own make_example + collate), so the numbers are the model's training speed without data
loading. MelHuBERT steps use 15 s crops; the distillation steps use 12 s utterances and include
both passes of a Base-sized teacher with random weights (a Hugging Face HubertModel folder written
to a temporary directory), which is the real cost of a distillation step. Reported: steps/s, samples/s, audio seconds/s,
FLOPs of one step (``torch.utils.flop_counter``) and, on CPU, the fraction of the ~146 GFLOP/s
fp32 peak of the CI machine. The CPU is shared with other jobs: expect noisy numbers.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s3prl_plugins.measure import CPU_PEAK_GFLOPS, time_calls  # noqa: E402
from s3prl_plugins.pretrain.config import load_yaml, shipped_config  # noqa: E402
from s3prl_plugins.pretrain.optim import build_optimizer  # noqa: E402
from s3prl_plugins.pretrain.recipe import get_recipe  # noqa: E402

CONFIGS = {"m2d": "m2d_vit_base-80x608p16x16", "m2ds": "m2d_s_vit_base-80x400p80x2", "m2das": "m2d_as_vit_base-80x608p16x16",
           "dasheng": "dasheng_base", "melhubert": "melhubert_20ms", "armhubert": "armhubert_960",
           "maskhubert": "maskhubert_960", "starhubert": "starhubert_960"}
DISTILLATION = ("armhubert", "maskhubert", "starhubert")
#: waveform length of the distillation batches (LibriSpeech utterances average about 12 s)
DISTILL_SECONDS = 12.0


def _through_recipe(recipe, raws: list[dict], device) -> dict:
    """A batch made by the recipe's own make_example + collate from synthetic raw items."""
    examples = [recipe.make_example(raw, np.random.default_rng(i)) for i, raw in enumerate(raws)]
    batch = recipe.collate(examples)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def synthetic_batch(recipe, batch: int, device) -> dict:
    name = recipe.name
    rng = np.random.default_rng(0)
    if name == "melhubert":  # 15 s crops of fbank frames (+1 frame so that the crop is random)
        frames = 2 * recipe.data.sequence_length + 1
        return _through_recipe(recipe, [{"fbank": 14.0 + 4.0 * rng.standard_normal((frames, 40), dtype=np.float32),
                                         "labels": rng.integers(0, recipe.model_cfg.num_cluster, frames)}
                                        for _ in range(batch)], device)
    if name in DISTILLATION:
        samples = int(DISTILL_SECONDS * 16000)
        recipe._mean_seconds = DISTILL_SECONDS
        return _through_recipe(recipe, [{"wave": 0.1 * rng.standard_normal(samples, dtype=np.float32)}
                                        for _ in range(batch)], device)
    if name == "dasheng":
        samples = recipe.crop_samples
        return {"wave": 0.1 * torch.randn(batch, samples, device=device),
                "mask_noise": torch.rand(batch, recipe.num_patches // recipe.objective.mask_group, device=device)}
    n_mels, unit = recipe.model_cfg.input_size
    pf, pt = recipe.model_cfg.patch_size
    out = {"lms": torch.randn(batch, 1, n_mels, unit, device=device),
           "mask_noise": torch.rand(batch, (n_mels // pf) * (unit // pt), device=device)}
    if name == "m2ds":
        out["offline_target"] = torch.randn(batch, unit // pt, 768, device=device)
    if name == "m2das":
        out["labels"] = (torch.rand(batch, 527, device=device) < 0.02).float()
    return out


def build(name: str, device) -> object:
    config = load_yaml(shipped_config(CONFIGS[name]))
    if config["train"].get("optimizer") == "adamw8bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            config["train"]["optimizer"] = "adamw"
        if device.type != "cuda":
            config["train"]["optimizer"] = "adamw"
    if name == "melhubert":
        config["data"]["stats"] = "libri360"  # the shipped official statistics
    if name in DISTILLATION:
        config["data"]["teacher"] = _random_teacher("wavlm" if "wavlm" in CONFIGS[name] else "hubert")
    recipe = get_recipe(name)(config)
    recipe.state.update({"norm_stats": [-7.1, 4.2], "classes": [str(i) for i in range(527)], "offline_dim": 768})
    if name == "melhubert" or name in DISTILLATION:
        recipe.prepare(None)
    return recipe


def _random_teacher(kind: str) -> str:
    """A HuBERT / WavLM Base-sized Hugging Face folder with random weights (the teacher's cost is
    what matters here, not its values)."""
    import tempfile

    import transformers

    folder = Path(tempfile.mkdtemp(prefix=f"bench_{kind}_teacher_"))
    config_class, model_class = ((transformers.WavLMConfig, transformers.WavLMModel) if kind == "wavlm"
                                 else (transformers.HubertConfig, transformers.HubertModel))
    model_class(config_class()).save_pretrained(folder)
    return str(folder)


def time_steps(step, warmup: int, repeats: int, device) -> list[float]:
    return time_calls(step, repeats=repeats, warmup=warmup, device=device)


def bench(name: str, args, device) -> dict:
    recipe = build(name, device)
    model = recipe.build_model().to(device).train()
    optimizer = build_optimizer(model, recipe.train, 1e-4, recipe.no_weight_decay)
    batch = synthetic_batch(recipe, args.batch, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    if args.compile:
        model = torch.compile(model)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = recipe.compute_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(model, "update_target"):
            model.update_target(0.9999)

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    # the math attention backend while counting: FlopCounterMode has no formula for the fused CPU
    # kernels and would count attention as free
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    times = time_steps(step, args.warmup, args.repeats, device)
    seconds = statistics.median(times)
    result = {"recipe": name, "batch": args.batch, "step_s": seconds, "samples_per_s": args.batch / seconds,
              "audio_s_per_s": args.batch * recipe.seconds_per_example() / seconds, "gflop_per_step": flops / 1e9,
              "achieved_gflops": flops / 1e9 / seconds}
    if device.type == "cpu":
        result["fraction_of_cpu_peak"] = result["achieved_gflops"] / CPU_PEAK_GFLOPS
    if name != "dasheng" and args.official_m2d:
        result["official_step_s"] = bench_official_m2d(name, recipe, model, batch, args, device)
    return result


def bench_official_m2d(name, recipe, ours, batch, args, device) -> float:
    """The official M2DViT / M2D_S_ViT / M2D_AS_ViT (patch_m2d.diff over MAE, outside the repo) with our weights."""
    from functools import partial

    sys.path.insert(0, args.official_m2d)
    import models_mae as official_models

    cfg = recipe.model_cfg
    kw = dict(img_size=list(cfg.input_size), patch_size=list(cfg.patch_size), in_chans=1, embed_dim=cfg.embed_dim,
              depth=cfg.depth, num_heads=cfg.num_heads, decoder_embed_dim=cfg.decoder_embed_dim,
              decoder_depth=cfg.decoder_depth, decoder_num_heads=cfg.decoder_num_heads, mlp_ratio=4,
              norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), norm_pix_loss=True)
    cls = {"m2d": official_models.M2DViT, "m2ds": official_models.M2D_S_ViT, "m2das": official_models.M2D_AS_ViT}[name]
    extra = {} if name == "m2d" else {"loss_m2d": 1.0, "loss_off": recipe.objective.loss_off,
                                      "off_emb_dim": 768 if name == "m2ds" else 527}
    model = cls(**kw, **extra).to(device).train()
    model.load_state_dict(ours.state_dict())
    optimizer = build_optimizer(model, recipe.train, 1e-4)
    ids_restore = torch.argsort(torch.argsort(batch["mask_noise"], 1), 1)
    keep = int(ids_restore.shape[1] * (1 - recipe.objective.mask_ratio))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if name == "m2d":
                loss = model(batch["lms"], mask_ratio=(ids_restore, keep))[0]
            else:
                target = batch["offline_target"] if name == "m2ds" else batch["labels"]
                loss = model(batch["lms"], target, mask_ratio=(ids_restore, keep))[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.update_target_network(0.9999)

    return statistics.median(time_steps(step, args.warmup, args.repeats, device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default="m2d,m2ds,dasheng")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--official-m2d", help="folder with the official (patched) models_mae.py, for a speed comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, precision {args.precision}, batch {args.batch}, threads {torch.get_num_threads()}")
    for name in args.recipes.split(","):
        r = bench(name.strip(), args, device)
        line = (f"{r['recipe']:8s} step {r['step_s']:.3f} s | {r['samples_per_s']:.2f} samples/s | "
                f"{r['audio_s_per_s']:.1f} audio s/s | {r['gflop_per_step']:.0f} GFLOP/step = {r['achieved_gflops']:.1f} GFLOP/s")
        if "fraction_of_cpu_peak" in r:
            line += f" ({100 * r['fraction_of_cpu_peak']:.0f} % of the {CPU_PEAK_GFLOPS:.0f} GFLOP/s CPU peak)"
        if "official_step_s" in r:
            line += f" | official {r['official_step_s']:.3f} s/step ({r['official_step_s'] / r['step_s']:.2f}x)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
