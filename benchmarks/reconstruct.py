"""Reconstruction throughput: what the diffusion decoder's training and sampling cost over the bare UNet.

Prints images/s, side by side in one run on the same batch and network, interleaved repeats (median, min):
  (a) bare training step: the decoder's forward + v-prediction loss + backward + AdamW step on a ready batch,
  (b) `fit_decoder`: dejavu's training (batch drawn from the image set, noise, timesteps, EMA update, progress),
  (c) bare sampling: the decoder's forward alone, `steps` times per image (no scheduler),
  (d) `sample`: dejavu's DDIM sampling (per-row seeded noise, scheduler steps),
  (e) `sample` with classifier-free guidance (`--guidance`, reconstruct_demo's 1.5): two passes per step;
ratios (b)/(a), (d)/(c) and (e)/(c): the overhead of everything around the network (about 0.5 for (e)).

    python benchmarks/reconstruct.py                               # reconstruct_demo's decoder, 32 px, CPU
    python benchmarks/reconstruct.py --channels 32 64 64 --batch 64 --steps 50
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch

from dejavu.reconstruct.decoder import ConditionalDecoder, DecoderSettings
from dejavu.reconstruct.diffusion import fit_decoder, sample


def _settings(args: argparse.Namespace, iterations: int) -> DecoderSettings:
    return DecoderSettings(image_size=args.size, channels=list(args.channels), iterations=iterations,
                           batch_size=args.batch, lr=1e-3, checkpoint_every=10_000)


def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    torch.manual_seed(0)
    images = torch.rand(512, 3, args.size, args.size) * 2 - 1
    conditions = torch.randn(512, args.condition)
    settings = _settings(args, args.iterations)
    decoder = ConditionalDecoder(args.condition, settings)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-3)
    x, c = images[:args.batch], conditions[:args.batch]
    steps = torch.randint(0, 1000, (args.batch,))
    target = torch.randn_like(x)
    sample_conditions = conditions[:args.sample_batch]

    def bare_train() -> float:
        start = time.perf_counter()
        for _ in range(args.iterations):
            loss = torch.nn.functional.mse_loss(decoder(x, steps, c), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return args.iterations * args.batch / (time.perf_counter() - start)

    def dejavu_train() -> float:
        start = time.perf_counter()
        fit_decoder(images, conditions, settings, seed=0, description="benchmark")
        return args.iterations * args.batch / (time.perf_counter() - start)

    @torch.no_grad()
    def bare_sample() -> float:
        decoder.eval()
        noise = torch.randn(args.sample_batch, 3, args.size, args.size)
        start = time.perf_counter()
        for t in range(args.steps):
            decoder(noise, torch.full((args.sample_batch,), 999 - t * (1000 // args.steps)), sample_conditions)
        return args.sample_batch / (time.perf_counter() - start)

    def dejavu_sample(sampling: DecoderSettings = settings) -> float:
        decoder.eval()
        start = time.perf_counter()
        sample(decoder, sample_conditions, sampling, args.steps, 1, list(range(args.sample_batch)),
               batch_size=args.sample_batch)
        return args.sample_batch / (time.perf_counter() - start)

    guided = dataclasses.replace(settings, condition_dropout=0.1, guidance=args.guidance)

    cases = {"(a) bare training step": bare_train, "(b) fit_decoder": dejavu_train,
             "(c) bare sampling (forward x steps)": bare_sample, "(d) sample (DDIM)": dejavu_sample,
             f"(e) sample (DDIM, guidance {args.guidance:g})": lambda: dejavu_sample(guided)}
    for case in cases.values():
        case()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, case in cases.items():
            rates[name].append(case())
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 32])
    parser.add_argument("--condition", type=int, default=640, help="condition width (demo: 128 + 512)")
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--iterations", type=int, default=10, help="training iterations per repeat")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps per sample")
    parser.add_argument("--sample-batch", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=1.5, help="case (e)'s classifier-free guidance weight")
    args = parser.parse_args()
    rates = measure(args)
    print(f"### Result: decoder {args.channels} at {args.size} px, batch {args.batch}, condition width "
          f"{args.condition}, {args.steps} DDIM steps\n")
    print(f"Median and minimum of {args.repeats} interleaved repeats; images/s (training: images per iteration x "
          "iterations / s; sampling: finished samples / s).\n")
    print("| case | median images/s | min images/s | ratio |")
    print("|---|---:|---:|---:|")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    names = list(rates)
    for i, name in enumerate(names):
        base = medians[names[0] if i < 2 else names[2]]
        print(f"| {name} | {medians[name]:,.1f} | {min(rates[name]):,.1f} | {medians[name] / base:.2f} |")
    print(f"\nmachine: {platform.machine()} ({torch.get_num_threads()} torch threads), {platform.platform()}, "
          f"Python {platform.python_version()}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
