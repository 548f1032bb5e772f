"""Benchmark: embedding throughput of an outside checkpoint inside `dejavu audit` vs the bare forward pass.

A torchvision ResNet-50 (random weights) is saved as a trainer would save it ({'state_dict': {'module.…'}}),
loaded the way `dejavu audit` loads it (dejavu.models.outside.load_outside: the prefix rule, ImageNet
normalisation re-applied in the model's Preprocess), and its images are embedded the way the embed stage
embeds them: uint8 batches through ``eval_images`` (resize, normalise) and ``embed_batches``. Side by side,
in alternating rounds, the same weights in a plain torchvision ResNet-50 run on the same batches, already
resized and normalised. Reported: the median seconds of each over ``--rounds`` and the throughput ratio
(audit / bare; the goal is >= 0.9). The two must embed to the same vectors, or the script exits 1.

    PYTHONPATH=src python benchmarks/audit_embedding.py                 # ResNet-50, 224 px, 64 images, 3 rounds
    PYTHONPATH=src python benchmarks/audit_embedding.py --arch resnet18 --size 64 --images 8 --rounds 1  # smoke
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from dejavu.attack.embed import embed_batches
from dejavu.config import load_config
from dejavu.data.augment import eval_images
from dejavu.models.outside import load_outside

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50", choices=("resnet18", "resnet50", "resnet101"))
    parser.add_argument("--size", type=int, default=224, help="the side the network sees")
    parser.add_argument("--images", type=int, default=64, help="images embedded per round")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (attack.batch_size)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = the library default")
    args = parser.parse_args(argv)
    if min(args.size, args.images, args.batch, args.rounds) < 1:
        parser.error("sizes and --rounds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = getattr(torchvision.models, args.arch)(weights=None)
    net.eval()
    generator = torch.Generator().manual_seed(1)
    # Cached images are uint8 (N, H, W, 3) squares of a larger side, resized to the network's side as in the embed stage.
    side = args.size + args.size // 7
    cached = torch.randint(0, 256, (args.images, side, side, 3), dtype=torch.uint8, generator=generator)
    chunks = [cached[start : start + args.batch] for start in range(0, args.images, args.batch)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 100}, path)
        config = load_config(None, [
            f"model.target={path}", f"model.reference={path}", f"model.arch={args.arch}", "train.stem=imagenet",
            f"data.input_size={args.size}", f"data.image_size={side}",
            f"model.mean={IMAGENET_MEAN}", f"model.std={IMAGENET_STD}", "attack.layer=backbone",
        ])
        encoder = load_outside(config, "A").encoder
    net.fc = torch.nn.Identity()
    # The bare pass gets its input ready-made: resized and normalised with ImageNet's statistics.
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    # (contiguous NCHW, as torchvision's ToTensor + default_collate give it: a permuted uint8 batch made float
    # keeps channels-last strides, on which the CPU convolutions run faster: timed apart, for information)
    ready = [((torch.nn.functional.interpolate(chunk.permute(0, 3, 1, 2).contiguous().float() / 255,
                                               size=(args.size, args.size), mode="bilinear", antialias=True,
                                               align_corners=False) - mean) / std).contiguous() for chunk in chunks]
    nhwc = [batch.contiguous(memory_format=torch.channels_last) for batch in ready]

    def audit() -> torch.Tensor:
        return torch.from_numpy(embed_batches({"A": encoder}, (eval_images(c, args.size) for c in chunks),
                                              "backbone")["A"])

    @torch.no_grad()
    def bare() -> torch.Tensor:
        return torch.cat([net(batch) for batch in ready])

    @torch.no_grad()
    def channels_last() -> torch.Tensor:
        return torch.cat([net(batch) for batch in nhwc])

    audit(), bare(), channels_last()  # warm-up: first-call allocations and kernel choices
    times: dict[str, list[float]] = {"audit": [], "bare": [], "channels_last": []}
    outputs = {}
    for _ in range(args.rounds):
        for name, function in (("audit", audit), ("bare", bare), ("channels_last", channels_last)):
            start = time.perf_counter()
            outputs[name] = function()
            times[name].append(time.perf_counter() - start)
    agree = torch.allclose(outputs["audit"], outputs["bare"], rtol=1e-3, atol=1e-4)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.arch} at {args.size} px, {args.images} images in batches of {args.batch}, median of {args.rounds} "
          f"alternating rounds; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads\n")
    print("| path | median s | images/s |")
    print("|---|---:|---:|")
    print(f"| `dejavu audit` (load_outside + eval_images + embed_batches) | {medians['audit']:.2f} | "
          f"{args.images / medians['audit']:.1f} |")
    print(f"| bare torchvision forward (input ready-made, NCHW) | {medians['bare']:.2f} | "
          f"{args.images / medians['bare']:.1f} |")
    print(f"| bare forward, channels-last input (information) | {medians['channels_last']:.2f} | "
          f"{args.images / medians['channels_last']:.1f} |")
    print(f"\nthroughput ratio audit / bare: {medians['bare'] / medians['audit']:.3f} (goal >= 0.9); "
          f"embeddings agree: {agree} (max |difference| "
          f"{float((outputs['audit'] - outputs['bare']).abs().max()):.2e})")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
