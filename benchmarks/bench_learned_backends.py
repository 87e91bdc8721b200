"""Cost of the paper's learned backends: `--preset paper` (SD2 inpainting + the completion network) with
full-size architectures and random weights, on the Kyoto photo, per view and peak GPU memory.

    .venv/bin/python benchmarks/bench_learned_backends.py [--mode stage] [--max-side 512]
    .venv/bin/python benchmarks/bench_learned_backends.py --tiny      # CPU smoke run with tiny models

Random weights cost the same compute as real ones, so this measures what a user pays without downloading
anything: the SD2-inpainting UNet/VAE/text-encoder configs (865M + 84M + 340M parameters) and the ZoeD-N
BEiT-L-384 completion network (5-channel patch embedding), saved in the `stitch models download --to` layout
and loaded through the registry like real weights (fp16 on CUDA). Reference in the same run: the offline
preset (classical backends) on the same photo and settings; the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
PHOTO = REPO.parent / "shared" / "data" / "photos" / "photo-1667788000333-4e36f948de9a.jpeg"
PROMPT = "a street with traditional buildings in Kyoto, Japan"


def build_full_size_sd2_inpainting(folder: Path) -> None:
    """SD 2 inpainting architecture (public configs), random weights, a letter-level CLIP tokenizer."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from tiny_learned_models import _tiny_clip_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=9,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=512,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    tokenizer = _tiny_clip_tokenizer()
    tokenizer.model_max_length = 77
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(folder)


def build_models_root(root: Path, tiny: bool) -> None:
    from tiny_learned_models import make_tiny_completion, make_tiny_inpaint_pipeline

    from completion.network.checkpoint import save_original_checkpoint
    from completion.network.model import DepthCompletionModel

    sd_dir = root / "sd2-community" / "stable-diffusion-2-inpainting"
    ckpt_dir = root / "paulengstler" / "invisible-stitch"
    ckpt_dir.mkdir(parents=True)
    if tiny:
        make_tiny_inpaint_pipeline(sd_dir)
        net = DepthCompletionModel.from_pretrained(make_tiny_completion(root / "tiny-net"))
        (ckpt_dir / "config.json").write_text(json.dumps(net.config.to_json_dict()))
    else:
        build_full_size_sd2_inpainting(sd_dir)
        torch.manual_seed(0)
        net = DepthCompletionModel(DepthCompletionModel.paper_config())
    save_original_checkpoint(net, ckpt_dir / "invisible-stitch.pt")


def run(preset: str, args, models_root: Path | None, out: Path) -> dict:
    import dataclasses

    from engine.config import PRESETS, OptimConfig
    from engine.run import run_generate

    base = PRESETS[preset]
    config = dataclasses.replace(
        base,
        photo=PHOTO,
        prompt=PROMPT,
        mode=args.mode,
        max_side=args.max_side,
        model_path=models_root,
        outpaint_steps=args.outpaint_steps,
        optim=dataclasses.replace(base.optim if base.optim else OptimConfig(), steps_per_view=args.steps),
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run_generate(config, run_dir=out, quiet=True)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    manifest = json.loads((out / "manifest.json").read_text())
    per_view = [round(sum(v for k, v in t.items() if isinstance(v, float)), 2) for t in manifest["timings"]]
    steps = [
        {k: round(v, 2) for k, v in t.items() if k in ("outpaint", "depth", "optimize")}
        for t in manifest["timings"]
    ]
    # Where the Gaussians lived (gsplat on CUDA) and where the outpainter ran.
    device = manifest.get("device", "cpu")
    return {"preset": preset, "wall_s": round(wall, 1), "peak_gpu_gib": round(peak, 2),
            "per_view_s": per_view, "steps": steps, "device": device,
            "renderer": manifest.get("renderer"),
            "outpainter_device": manifest["backends"]["outpainter"].get("device", "cpu")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="stage")
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--steps", type=int, default=100, help="optimisation steps per view")
    parser.add_argument("--outpaint-steps", type=int, default=50)
    parser.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        t0 = time.perf_counter()
        build_models_root(root, args.tiny)
        print(f"built random-weight models in {time.perf_counter() - t0:.1f}s", flush=True)
        learned = run("paper", args, root, Path(tmp) / "paper")
        reference = run("offline", args, None, Path(tmp) / "offline")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"device: {gpu}; mode {args.mode}, max side {args.max_side}, outpaint steps {args.outpaint_steps}")
    for r in (learned, reference):
        print(json.dumps(r))
    ratio = learned["wall_s"] / max(reference["wall_s"], 1e-9)
    print(f"paper preset: {learned['wall_s']}s ({ratio:.2f}x the offline preset's {reference['wall_s']}s), "
          f"peak GPU memory {learned['peak_gpu_gib']} GiB, per view {learned['per_view_s']} s")  # fmt: skip


if __name__ == "__main__":
    main()
