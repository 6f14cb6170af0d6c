"""course_lib.flows RealNVP against the normflows package's equivalent model on a 2D toy density.

Both models: K affine couplings (split 1 | 1) with an MLP subnet 1 -> H -> H -> 2 (ReLU, last layer
zero-initialised, unclamped ``exp`` scale as in RealNVP), a swap permutation after every coupling,
a standard-normal base; Adam with the same learning rate, the same batches (pre-drawn, so data
generation is not timed), the same number of steps and the same seeds (``--seeds`` runs, each
with its own initialisation and batches; NLL is reported as mean +- standard deviation over
them, because one seed's difference is mostly initialisation noise). A third row shows
course_lib's default coupling (atan soft clamp, clamp = 2) on the same setting.

Training alternates between the models in chunks of steps, so that a busy machine slows all of
them alike; steps/second is the total over the chunks. Test NLL is in nats on held-out samples;
the true density's entropy is the best NLL any model can reach.

normflows is not a course dependency. Install it without touching torch, e.g.
    pip install --no-deps normflows            (or: pip install --no-deps --target DIR normflows
                                                 and run with PYTHONPATH=DIR)
Run:  python benchmarks/bench_flows_vs_normflows.py [--steps 2000] [--seeds 3] [--toy two_moons]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", default="two_moons", help="course_lib.data.toy2d name")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--couplings", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--chunk", type=int, default=100, help="steps per alternation chunk")
    parser.add_argument("--test-size", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    args = parser.parse_args()

    try:
        import normflows as nf
    except ImportError:
        print(
            "SKIPPED: the normflows package is not installed, so there is nothing to compare with.\n"
            "Install it without pulling another torch: pip install --no-deps normflows"
        )
        return 0

    from course_lib.data.toy2d import make_toy
    from course_lib.flows import MLP, AffineCoupling, FlowModel, FlowSequential, Permutation, StandardNormal

    torch.set_num_threads(args.threads)
    toy = make_toy(args.toy)
    test = toy.sample(args.test_size, generator=torch.Generator().manual_seed(10**6))
    entropy = toy.entropy(n_mc=200_000, generator=torch.Generator().manual_seed(10**6 + 1))

    def course_model(clamp_kind: str, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        subnet = functools.partial(MLP, hidden=args.hidden, layers=2)
        layers = []
        for _ in range(args.couplings):
            layers += [AffineCoupling(2, subnet, split_channels=1, clamp=2.0, clamp_kind=clamp_kind), Permutation(2)]
        return FlowModel(FlowSequential(layers), StandardNormal(2))

    def normflows_model(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        flows = []
        for _ in range(args.couplings):
            param_map = nf.nets.MLP([1, args.hidden, args.hidden, 2], init_zeros=True)
            flows += [nf.flows.AffineCouplingBlock(param_map, scale_map="exp"), nf.flows.Permute(2, mode="swap")]
        return nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)

    ours_loss = lambda m, x: -m.log_prob(x).mean()  # noqa: E731
    names = ("course_lib (exp scale)", "normflows (exp scale)", "course_lib (atan clamp 2)")
    nlls = {name: [] for name in names}
    seconds = dict.fromkeys(names, 0.0)
    params = {}
    for seed in range(args.seeds):
        g = torch.Generator().manual_seed(seed)
        batches = toy.sample(args.steps * args.batch, generator=g).view(args.steps, args.batch, 2)
        runs = {
            names[0]: (course_model("none", seed), ours_loss),
            names[1]: (normflows_model(seed), lambda m, x: m.forward_kld(x)),
            names[2]: (course_model("atan", seed), ours_loss),
        }
        optimizers = {name: torch.optim.Adam(model.parameters(), lr=args.lr) for name, (model, _) in runs.items()}
        for start in range(0, args.steps, args.chunk):
            for name, (model, loss_fn) in runs.items():
                opt = optimizers[name]
                t0 = time.perf_counter()
                for step in range(start, min(start + args.chunk, args.steps)):
                    loss = loss_fn(model, batches[step])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                seconds[name] += time.perf_counter() - t0
        for name, (model, _) in runs.items():
            with torch.no_grad():
                nlls[name].append(float(-model.log_prob(test).mean()))
            params[name] = sum(p.numel() for p in model.parameters())

    results = {}
    for name in names:
        values = torch.tensor(nlls[name])
        std = float(values.std()) if len(values) > 1 else 0.0
        results[name] = (float(values.mean()), std, args.seeds * args.steps / seconds[name], params[name])

    print(f"toy density: {args.toy}; true entropy {entropy.value:.4f} +- {entropy.stderr:.4f} nats (best possible NLL)")
    print(
        f"{args.couplings} couplings, MLP hidden {args.hidden}x2, Adam lr {args.lr}, {args.steps} steps, "
        f"batch {args.batch}, seeds 0..{args.seeds - 1}, torch {torch.__version__}, {args.threads} thread(s), "
        f"normflows {getattr(nf, '__version__', '?')}"
    )
    print(f"{'model':<28}{'params':>8}{'test NLL (nats), mean +- sd':>30}{'NLL - entropy':>15}{'steps/s':>10}")
    for name, (nll, sd, speed, n_params) in results.items():
        print(f"{name:<28}{n_params:>8d}{nll:>20.4f} +- {sd:.4f}{nll - entropy.value:>15.4f}{speed:>10.1f}")
    theirs = results[names[1]]
    for name, label in ((names[0], "same model"), (names[2], "atan-clamped")):
        ours = results[name]
        print(
            f"course_lib ({label}) vs normflows: test NLL difference {ours[0] - theirs[0]:+.4f} nats, "
            f"speed ratio {ours[2] / theirs[2]:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
