"""Tiny random models of the real classes, built offline and saved with `save_pretrained` (diffusers'
dummy-components pattern): the learned backends load them through the registry/factory path users take."""

from __future__ import annotations

from pathlib import Path

import torch


def _tiny_clip_tokenizer():
    """A CLIP BPE tokenizer over single letters (no merges): enough for prompts, no download."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    letters = "abcdefghijklmnopqrstuvwxyz"
    for suffix in ("", "</w>"):
        for c in letters:
            vocab[c + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


def _tiny_sd_components(in_channels: int, sample_size: int, seed: int) -> dict:
    """UNet, KL VAE, CLIP text encoder, DDIM scheduler and tokenizer of a Stable Diffusion pipeline, a few
    hundred kB in all; in_channels 4 (text-to-image) or 9 (inpainting: latents + mask + masked latents)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=16,
            intermediate_size=24,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=64,
            max_position_embeddings=16,
            projection_dim=16,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": _tiny_clip_tokenizer(),
        "unet": unet,
        "scheduler": scheduler,
    }


def make_tiny_inpaint_pipeline(folder: Path, seed: int = 0) -> Path:
    """A StableDiffusionInpaintPipeline (9-channel UNet, KL VAE, CLIP text encoder) of a few hundred kB."""
    from diffusers import StableDiffusionInpaintPipeline

    parts = _tiny_sd_components(in_channels=9, sample_size=16, seed=seed)
    pipe = StableDiffusionInpaintPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder)
    return Path(folder)


def make_tiny_text2image_pipeline(folder: Path, seed: int = 0) -> Path:
    """A StableDiffusionPipeline (4-channel UNet): native size 8 x VAE factor 2 = 16 px, fast on a CPU."""
    from diffusers import StableDiffusionPipeline

    parts = _tiny_sd_components(in_channels=4, sample_size=8, seed=seed)
    pipe = StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder)
    return Path(folder)


def make_tiny_asymmetric_vae(folder: Path, seed: int = 1) -> Path:
    """An AsymmetricAutoencoderKL (decoder sees the known image + mask) matching the tiny pipeline."""
    from diffusers import AsymmetricAutoencoderKL

    torch.manual_seed(seed)
    vae = AsymmetricAutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        down_block_out_channels=(8, 16),
        up_block_types=("UpDecoderBlock2D",) * 2,
        up_block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    vae.save_pretrained(folder)
    return Path(folder)


def make_tiny_depth_anything(folder: Path, metric: bool = False, seed: int = 0) -> Path:
    """DepthAnythingForDepthEstimation (tiny DINOv2 backbone) + its DPT image processor.

    Relative models output affine-invariant inverse depth; metric ones metres (sigmoid * max_depth). The
    neck and head are re-initialised so a random model gives a varied, positive map (otherwise ~0)."""
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    torch.manual_seed(seed)
    backbone = Dinov2Config(
        image_size=28,
        patch_size=14,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        out_features=["stage1", "stage2"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=16,
        patch_size=14,
        neck_hidden_sizes=[8, 16],
        fusion_hidden_size=8,
        head_hidden_size=8,
        depth_estimation_type="metric" if metric else "relative",
        max_depth=10,
    )
    model = DepthAnythingForDepthEstimation(config)
    with torch.no_grad():
        # The default init (std 0.02) shrinks activations through the neck to ~1e-6: re-init the convs so a
        # random model gives a varied map, then offset the last layer so it stays positive.
        for module in (*model.neck.modules(), *model.head.modules()):
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    module.bias.zero_()
        model.head.conv3.bias.fill_(0.0 if metric else 3.0)
    processor = DPTImageProcessor(
        do_resize=True,
        size={"height": 28, "width": 28},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_pad=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def make_tiny_completion(folder: Path, seed: int = 0) -> Path:
    """The depth completion network (completion/network/model.py) at test size, saved with save_pretrained.

    Its layers are re-initialised with unit-gain normal weights so the random network's output varies across
    the image (the default small init gives a nearly constant map, which would hide flips and crops)."""
    from completion.network.model import DepthCompletionModel

    model = DepthCompletionModel.tiny(seed=seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                torch.nn.init.normal_(module.weight, std=(2.0 / module.weight[0].numel()) ** 0.5)
    model.save_pretrained(folder)
    return Path(folder)
