"""Training throughput: is the device starved by the input pipeline?

Prints images/s of
  (a) bare: the method's forward + backward + optimiser step on ready-made random views (no augmentation),
  (b) full: the real training step of `dejavu.train.loop` from a uint8 batch: views augmented batched on the
      device, the method's loss, backward, step (and EMA where the method has one),
side by side in one run, same batch, same network, interleaved repeats; the goal is (b) >= 90 % of (a).

    python benchmarks/train_step.py                                  # ConvNet, 32 px, every method, CPU
    python benchmarks/train_step.py --backbone resnet18 --input-size 64 --batch 256 --methods vicreg
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from dejavu.config import load_config
from dejavu.train.allocator import keep_freed_memory
from dejavu.distributed import device as default_device
from dejavu.train.loop import make_views, optimisation_step
from dejavu.train.methods import METHODS, build_method
from dejavu.train.optim import build_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method_name: str, args: argparse.Namespace, device: torch.device) -> dict:
    overrides = [f"train.method={method_name}", f"train.backbone={args.backbone}", f"data.input_size={args.input_size}",
                 f"train.batch_size={args.batch}", f"train.precision={args.precision}", f"train.projector={args.projector}"]
    config = load_config(None, overrides).train
    torch.manual_seed(0)
    method = build_method(config, args.input_size, epochs=1, steps_per_epoch=10_000, n_classes=10)
    method = method.to(device, memory_format=torch.channels_last).train()
    optimizer = build_optimizer([p for p in method.parameters() if p.requires_grad], config.optimizer, config.lr,
                                config.weight_decay, config.momentum)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    side = args.image_size or args.input_size * 2
    uint8 = torch.from_numpy(rng.integers(0, 256, (args.batch, side, side, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 10, args.batch)).to(device)
    ready = [v.clone() for v in make_views(uint8, method, config, generator, None, device)]

    def bare() -> None:
        optimisation_step(method, method, optimizer, scaler, ready, labels, 0, config)

    def full() -> None:
        views = make_views(uint8, method, config, generator, None, device)
        optimisation_step(method, method, optimizer, scaler, views, labels, 0, config)

    rates: dict[str, list[float]] = {"bare": [], "full": []}
    for _ in range(args.warmup):
        bare(), full()
    for _ in range(args.repeats):
        for name, step in (("bare", bare), ("full", full)):  # interleaved: drift hits both alike
            _sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            _sync(device)
            rates[name].append(args.steps * args.batch / (time.perf_counter() - start))
    a, b = statistics.median(rates["bare"]), statistics.median(rates["full"])
    return {"method": method_name, "views": len(method.views), "bare": a, "full": b, "ratio": b / a}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--backbone", default="convnet")
    parser.add_argument("--projector", default="512-512-512")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=0, help="stored image side (default 2 x input size)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--plain-allocator", action="store_true",
                        help="leave glibc's allocator as it is (training keeps freed memory: dejavu.train.allocator)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tuned = keep_freed_memory() if not args.plain_allocator else False  # as train_encoder does
    device = default_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; backbone {args.backbone}, {args.input_size} px, batch {args.batch}, {args.precision}; "
          f"median of {args.repeats} blocks of {args.steps} steps, bare and full interleaved; "
          f"allocator {'keeps freed memory' if tuned else 'plain'}")
    print("| method | views | (a) bare img/s | (b) full step img/s | b / a |")
    print("|---|---|---|---|---|")
    for method_name in args.methods:
        row = measure(method_name, args, device)
        print(f"| {row['method']} | {row['views']} | {row['bare']:.0f} | {row['full']:.0f} | {row['ratio']:.1%} |", flush=True)


if __name__ == "__main__":
    main()
