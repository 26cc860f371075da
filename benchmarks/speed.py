"""Training speed, measured side by side in one process run.

For MLPs of width 10/100/784 and depth 2/14, trainable sets `bn`, `all` and `random`, on MNIST (48,000
training images, batch 128, i.e. 375 steps per epoch), it times:

  (a) textbook: one nn.Module at a time, DataLoader(TensorDataset, batch_size=128, shuffle=True),
      torch.optim.SGD over the trainable parameters (frozen ones have requires_grad=False);
  (b) bnonly's single-model path: the engine's step with a stack of one model;
  (c) bnonly's batched engine: the same step with a stack of M models (M = 12, or as many as the
      sweep stacks: stacking.stack_cap), of 3 seeds as in a sweep stack, where the models of one
      seed share its batches;
  (d) the alternative the engine was measured against: torch.func (stack_module_state +
      vmap(grad(functional_call))) on the same M models, each gathering its own batch (so (c)/(d)
      includes (c)'s saving from gathering once per seed where the models of a seed read one batch
      through a frozen first layer, the BN-like sets; `all` gathers a batch per model in both; with
      a batch per model everywhere).

and reports model-epochs per second, achieved GFLOP/s, and efficiency = floor / measured time,
where floor = max(FLOPs the step needs / torch.mm peak, bytes it must move / copy bandwidth),
both peaks measured in this run; `eff (a)` is the textbook loop's, and `max` is (a)'s time over
the floor: the (c)/(a) of a step running at its floor, which a (c)/(a) above it would have to beat
(the floor rests on the peaks this run read, and moves with them). Only the work the trainable set needs is counted: no weight
gradient for frozen layers, no input gradient for the first layer.

    python benchmarks/speed.py --quick          # < 8 minutes on 2 CPU cores
    python benchmarks/speed.py --device cpu     # the CPU even where there is a GPU (default: auto)
    python benchmarks/speed.py --only cifar     # just the CIFAR ResNet rows (ResNet-20/56: bn, all, random)
    python benchmarks/speed.py --table benchmarks/results/FILE.json   # a result file as Markdown tables

CIFAR ResNets (ResNet-20 and -56 with Frankle's preset, on generated 32x32x3 batches) get rows of
their own: the textbook loop against the stacked engine (stack_module.FunctionalStack; 3 models on a CPU,
the sweep's stack on a GPU), model-epochs per second and the FLOP efficiency.

The stack policies time a sweep of the narrow grid (width 10 at depths 2 and 4, and width 100 at
depth 2; `bn`, `random`, `all`, `out`, 3 seeds, 3 epochs of all of MNIST, one process) with the sets
of an architecture in one stack per kind against sharing stacks as EngineOptions does by default,
in interleaved rounds.

Each timing runs whole steps for a fixed wall-time budget after warm-up and converts to epochs of
375 steps (validation is not included: the textbook loop has none). An MLP row times (a)-(d) in 3
interleaved rounds (a third of the budget each, every variant in turn): its times are the medians
over the rounds and its ratios the medians of the rounds' ratios, so that a drift of the machine's
speed between variants does not become a ratio. The result, with the machine, torch version,
commit and date, goes to a file of its own under benchmarks/results/ and, as one JSON object, to the
last line of output; `--table FILE` prints a result file's tables as the performance page shows them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import ROUNDS, copy_bandwidth, floor_seconds, interleaved, mm_peak, ratio, sync, timed, work_per_step
from torch.utils.data import DataLoader, TensorDataset

from bnonly.config.layers import resolve
from bnonly.engine.resident import Tensors, load
from bnonly.config.options import DEVICES
from bnonly.engine.device import EngineOptions, resolve_device
from bnonly.engine.loop import Training, gather
from bnonly.registry.nets import build
from bnonly.sweeps.grouping import stack_cap
from bnonly.engine.stack import stack_order
from bnonly.engine.masks import plan

STEPS_PER_EPOCH = 375  # 48,000 / 128


def textbook_model(cfg, device, input_shape=(1, 28, 28)):
    """A model and its torch.optim.SGD as a textbook loop sets them up: what does not train has
    requires_grad=False; `random`'s weights train under a gradient hook that masks their entries."""
    model = build(cfg, input_shape).to(device).train()
    p = plan(model, cfg)
    params = []
    for n, q in model.named_parameters():
        m = p.masks[n]
        q.requires_grad_(m is not False)
        if isinstance(m, torch.Tensor):
            q.register_hook(lambda g, mask=m.to(device).float(): g * mask)
        if m is not False:
            params.append(q)
    return model, torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum) if params else None


def textbook(cfg, d, device):
    """(a) The anchor: a plain loop over a DataLoader."""
    model, opt = textbook_model(cfg, device, d.input_shape)
    loader = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=128, shuffle=True)
    it = iter(loader)

    def one():
        nonlocal it
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        x, y = x.to(device), y.to(device)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return one


def engine_step(cfg, d, device, m, seeds=3):
    """(b)/(c) bnonly: m models as one stack, as the sweep stacks them: `seeds` seeds, the models of
    one seed (in a sweep, its trainable sets) sharing that seed's batches, in the engine's stack
    order; each call one batch of the engine's own epoch loop (engine.Training.batches) and its step."""
    S = min(seeds, m)
    cfgs = [cfg.replace(seed=i % S) for i in range(m)]
    group = Training([cfgs[i] for i in stack_order(cfgs)], device, None, data=d)
    group.n_batches = len(d.y_train) // cfg.batch_size  # full batches only
    batches = iter(())

    def one():
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:
            batches = group.batches()
            batch = next(batches)
        group.train_step(batch)
    return one


def sweep_stack(cfg, M: int, device: str) -> int:
    """How many of M runs like cfg (M seeds) a sweep stacks on this device and thread count (stacking.stack_cap)."""
    return stack_cap(cfg, EngineOptions.for_device(device), M, torch.get_num_threads())


def vmap_step(cfg, d, device, m):
    """(d) the torch.func alternative: stack_module_state + vmap(grad(functional_call)), SGD with
    momentum over the trainable tensors (BN running statistics are vmapped buffers)."""
    import copy

    from torch.func import functional_call, grad, stack_module_state, vmap
    cfgs = [cfg.replace(seed=s) for s in range(m)]
    models = [build(c) for c in cfgs]
    masks = plan(models[0], cfg).masks
    params, buffers = stack_module_state(models)
    params = {n: p.to(device) for n, p in params.items()}
    buffers = {n: b.to(device) for n, b in buffers.items()}
    train_p = {n: p for n, p in params.items() if masks[n] is not False}  # random: dense, masked below
    frozen = {n: p for n, p in params.items() if masks[n] is False}
    entry = {n: masks[n].to(device).float() for n in train_p if isinstance(masks[n], torch.Tensor)}
    base = copy.deepcopy(models[0]).to("meta")

    def loss(tp, fp, b, x, y):
        return F.cross_entropy(functional_call(base, ({**tp, **fp}, b), (x,)), y)

    g = vmap(grad(loss), in_dims=(0, 0, 0, 0, 0))
    perms = torch.stack([torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(s))
                         for s in range(m)]).to(device)
    names = list(train_p)
    moms: list = []
    state = {"b": 0}

    def one():
        b = state["b"] % (len(d.y_train) // 128)
        state["b"] += 1
        idx = perms[:, b * 128:(b + 1) * 128]
        grads = g(train_p, frozen, buffers, gather(d.x_train, idx), d.y_train[idx])
        gl = [grads[n] * entry[n] if n in entry else grads[n] for n in names]
        with torch.no_grad():
            if moms:
                torch._foreach_mul_(moms, cfg.momentum)
                torch._foreach_add_(moms, gl)
            else:
                moms.extend(gl)
            torch._foreach_add_([train_p[n] for n in names], moms, alpha=-cfg.lr)
    return one


def cifar_like(n: int, device: str) -> Tensors:
    """n generated images in CIFAR-10's shape (3 x 32 x 32), normalised: timings do not depend on the
    pixels, and CIFAR-10 itself is not needed to measure them."""
    g = torch.Generator().manual_seed(0)
    def x(k):
        return torch.randn(k, 3, 32, 32, generator=g).to(device)
    def y(k):
        return torch.randint(0, 10, (k,), generator=g).to(device)
    return Tensors(x(n), y(n), x(256), y(256), x(256), y(256), torch.zeros(3, device=device))


def conv_flops(cfg, shape=(3, 32, 32)) -> tuple[int, int]:
    """Forward FLOPs of one image through a model's conv and linear layers, in all and in its first layer."""
    model = build(cfg, shape)
    counts = []

    def hook(mod, inp, out):
        w = mod.weight
        counts.append(2 * out[0].numel() * (w[0].numel() if isinstance(mod, torch.nn.Conv2d) else w.shape[1]))
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    model.eval()(torch.zeros(1, *shape))
    for h in hs:
        h.remove()
    return sum(counts), counts[0]


CIFAR_STEPS_PER_EPOCH = 352  # 45,000 / 128: CIFAR-10's training set less the frankle preset's 10% validation


def cifar_rows(device: str, peak: float, budget: float, M: int) -> list[dict]:
    """ResNet-20 and ResNet-56 (Frankle's preset) on generated CIFAR-shaped batches: (a) the textbook
    loop, (c) the stacked engine (stack_module.FunctionalStack), model-epochs per second and efficiency =
    the step's FLOPs (forward; input gradients except into the image; weight gradients where
    weights train) / torch.mm peak / measured time."""
    d = cifar_like(128 * 4, device)
    rows = []
    print(f"CIFAR ResNets (Frankle's preset, batch 128, an epoch = {CIFAR_STEPS_PER_EPOCH} steps; generated "
          "32x32x3 batches, no augmentation in either loop)")
    head = (f"{'model':>9} {'set':>6} | {'(a) textbook':>12} {'(c) stacked':>11} | {'(c)/(a)':>7} | "
            f"{'s/model-epoch (c)':>17} {'eff (a)':>7} {'eff (c)':>7} {'M':>3}")
    print(head)
    print("-" * len(head))
    for name in ("resnet20", "resnet56"):
        for tset in ("bn", "all", "random"):
            cfg = resolve("frankle", model=name, trainable=tset, augment=False)  # as the textbook loop
            fwd, first = conv_flops(cfg)
            flops = 128 * (2 * fwd - first + (fwd if tset != "bn" else 0))  # random: dense weight gradients
            ta = timed(textbook(cfg, d, device), device, budget, min_steps=2)
            m = sweep_stack(cfg, M, device) if device == "cuda" else min(3, M)
            tc = timed(engine_step(cfg, d, device, m), device, budget, min_steps=2) / m
            floor = flops / (peak * 1e9)
            row = {"model": name, "set": tset, "batched_models": m,
                   "model_epochs_per_s": {"textbook": 1 / (ta * CIFAR_STEPS_PER_EPOCH),
                                          "batched": 1 / (tc * CIFAR_STEPS_PER_EPOCH)},
                   "ratio_batched_vs_textbook": ta / tc, "seconds_per_model_epoch": tc * CIFAR_STEPS_PER_EPOCH,
                   "efficiency_textbook": floor / ta, "efficiency_batched": floor / tc}
            rows.append(row)
            print(f"{name:>9} {tset:>6} | {row['model_epochs_per_s']['textbook']:>12.4f} "
                  f"{row['model_epochs_per_s']['batched']:>11.4f} | {ta / tc:>6.2f}x | "
                  f"{tc * CIFAR_STEPS_PER_EPOCH:>17.1f} {floor / ta:>7.0%} {floor / tc:>7.0%} {m:>3}", flush=True)
    return rows


REPORT_SETS = ["all", "all-nobn", "bn", "bn+out", "random", "out", "none"]


def textbook_run(cfg, device, epochs: int) -> float:
    """A textbook run, timed from start-up to its test accuracy: build the model, freeze what does
    not train (a gradient hook masks the random entries), DataLoader + torch.optim.SGD for `epochs`
    epochs with validation after each (best weights kept), then the test set."""
    t0 = time.perf_counter()
    d = load(cfg.dataset, cfg.val_fraction, cfg.data_seed, cfg.subset, device)
    torch.manual_seed(cfg.seed)
    model, opt = textbook_model(cfg, device)
    loader = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=cfg.batch_size, shuffle=True, drop_last=False)
    best, best_state = float("inf"), None
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            if len(y) < 2:
                continue
            loss = F.cross_entropy(model(x), y)
            if opt:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            val = sum(F.cross_entropy(model(x), y, reduction="sum").item()
                      for x, y in zip(d.x_val.split(1000), d.y_val.split(1000))) / len(d.y_val)
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    with torch.no_grad():
        (model(d.x_test).argmax(1) == d.y_test).float().mean().item()
    sync(device)
    return time.perf_counter() - t0


NARROW_SETS = ["bn", "random", "all", "out"]  # the narrow end-to-end row's sets (widths 10, depths 2 and 4)


def end_to_end(width: int, depths: list[int], subset: int, epochs: int, device: str, sets=REPORT_SETS) -> dict:
    """A quick-sized slice of a real sweep, `sets` x 3 seeds of one width at `depths`, through the
    sweep (grouping, stacking, validation, test, the store; one process) against the textbook loop
    over the same runs, each for the epochs the sweep ran it."""
    import tempfile

    from bnonly.config.layers import SweepConfig
    from bnonly.config.options import SweepOptions
    from bnonly.store import Store
    from bnonly.sweeps.driver import run
    sweep = SweepConfig(name="e2e", preset="report", models=["mlp"], widths=[width], depths=list(depths),
                        trainable=list(sets), seeds=[0, 1, 2], settings={"max_epochs": epochs, "subset": subset})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run(sweep, tmp, SweepOptions(device=device, estimate=False), quiet=True)
        t_engine = time.perf_counter() - t0
        rows = Store(f"{tmp}/results.sqlite").runs()
    t_text = sum(textbook_run(resolve("report", **r["config"]), device, r["epochs_run"]) for r in rows)
    return {"width": width, "depth": "/".join(map(str, depths)), "sets": list(sets), "runs": len(rows),
            "subset": subset, "max_epochs": epochs, "model_epochs": sum(r["epochs_run"] for r in rows),
            "seconds_engine": t_engine, "seconds_textbook": t_text, "ratio": t_text / t_engine}


POLICIES = {"apart": {"BNONLY_FROZEN_STACK_WEIGHTS": "0", "BNONLY_ONE_STACK_WEIGHTS": "0"}, "shared": {}}


def stack_policies(device: str, rounds: int = 2) -> list[dict]:
    """The sweep's time with the sets of an architecture apart (one stack per kind: dense, entries,
    gamma/beta, head) and shared (EngineOptions' default: the frozen sets together, and at width 10
    every set), in interleaved rounds: the narrow grid of width 10 (depths 2 and 4) and width 100."""
    import os
    import tempfile

    from bnonly.config.layers import SweepConfig
    from bnonly.config.options import SweepOptions
    from bnonly.sweeps.driver import run
    out = []
    for width, depths in ((10, [2, 4]), (100, [2])):
        sweep = SweepConfig(name="policy", preset="report", models=["mlp"], widths=[width], depths=depths,
                            trainable=NARROW_SETS, seeds=[0, 1, 2], settings={"max_epochs": 3})
        times = {name: [] for name in POLICIES}
        for _ in range(rounds):
            for name, env in POLICIES.items():
                saved = {k: os.environ.get(k) for k in ("BNONLY_FROZEN_STACK_WEIGHTS", "BNONLY_ONE_STACK_WEIGHTS")}
                os.environ.update(env)
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        t0 = time.perf_counter()
                        run(sweep, tmp, SweepOptions(device=device, estimate=False), quiet=True)
                        times[name].append(time.perf_counter() - t0)
                finally:
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
        out.append({"width": width, "depth": "/".join(map(str, depths)), "sets": NARROW_SETS, "rounds": rounds,
                    "seconds_apart": times["apart"], "seconds_shared": times["shared"],
                    "ratio": statistics.median(a / b for a, b in zip(times["apart"], times["shared"]))})
    return out


RESULTS = Path(__file__).resolve().parent / "results"


def save(result: dict, args) -> Path:
    """The run's result as a file of its own under benchmarks/results/ (the performance page's tables
    are these files' numbers), with what it was measured on: machine, threads, torch, commit, date;
    and as the last line of output, one JSON object."""
    import datetime
    import platform
    import subprocess

    from bnonly.engine.device import device_name
    here = Path(__file__).resolve().parent
    def git(*a):
        r = subprocess.run(["git", *a], cwd=here, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    now = datetime.datetime.now(datetime.timezone.utc)
    meta = {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
            "machine": device_name(result["device"]), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:])}
    out = {**meta, **result}
    folder = Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{now:%Y-%m-%d-%H%M}-{result['device']}{'-quick' if args.quick else ''}{'-' + args.only if args.only else ''}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"result: {path}", file=sys.stderr)
    print(json.dumps(out))
    return path


def markdown(result: dict, name: str) -> str:
    """A result file as the performance page's tables: what it was measured on, then its rows."""
    r = result
    threads = f", {r['threads']} threads" if "threads" in r else ""
    note = " Transcribed from the table the run printed, before the benchmark wrote result files." if r.get("transcribed_from") else ""
    lines = [f"`results/{name}`: {r['machine']}{threads}, torch {r['torch']}, commit {r['commit']}, {r['date']}; "
             f"torch.mm peak {r['mm_peak_gflops']:,.0f} GFLOP/s, copy {r['copy_gb_per_s']:,.0f} GB/s.{note}", ""]
    def table(header, rows):
        lines.extend(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows, ""])
    if r.get("configs"):
        table(["width", "depth", "set", "(a) textbook", "(b) single", "(c) stacked", "M", "(c)/(a)", "(c)/(d) vmap",
               "of mm peak"],
              [f"| {c['width']} | {c['depth']} | {c['set']} | {c['model_epochs_per_s']['textbook']:.2f} | "
               f"{c['model_epochs_per_s']['single']:.2f} | {c['model_epochs_per_s']['batched']:.2f} | "
               f"{c['batched_models']} | {c['ratio_batched_vs_textbook']:.1f}x | {c['ratio_batched_vs_vmap']:.1f}x | "
               f"{c['fraction_of_mm_peak']:.0%} |" for c in r["configs"]])
    if r.get("end_to_end"):
        table(["end to end", "runs", "model-epochs", "sweep", "textbook", "ratio"],
              [f"| width {e['width']}, depth {e['depth']}"
               + (f", {'/'.join(e['sets'])}" if e.get("sets", REPORT_SETS) != REPORT_SETS else "")
               + f" | {e['runs']} | {e['model_epochs']} | "
               f"{e['seconds_engine']:.1f} s | {e['seconds_textbook']:.1f} s | {e['ratio']:.1f}x |" for e in r["end_to_end"]])
    if r.get("stack_policies"):
        table(["stack policy", "rounds", "sets apart", "sets shared", "apart / shared"],
              [f"| width {p['width']}, depth {p['depth']}, {'/'.join(p['sets'])} | {p['rounds']} | "
               f"{statistics.median(p['seconds_apart']):.1f} s | {statistics.median(p['seconds_shared']):.1f} s | "
               f"{p['ratio']:.2f}x |" for p in r["stack_policies"]])
    if r.get("cifar"):
        table(["model", "set", "(a) textbook", "(c) stacked", "M", "(c)/(a)", "s per model-epoch (c)"],
              [f"| {c['model']} | {c['set']} | {c['model_epochs_per_s']['textbook']:.4f} | "
               f"{c['model_epochs_per_s']['batched']:.4f} | {c['batched_models']} | "
               f"{c['ratio_batched_vs_textbook']:.2f}x | {c['seconds_per_model_epoch']:.0f} |" for c in r["cifar"]])
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short timings (under 8 minutes on 2 cores)")
    ap.add_argument("--device", default="auto", choices=DEVICES, help="auto (default): the GPU when there is one")
    ap.add_argument("--models", type=int, default=12, help="M, models in the batched stack (default 12)")
    ap.add_argument("--only", choices=("mlp", "cifar"), default=None, help="only the MLP rows (and end to end) "
                    "or only the CIFAR ResNet rows")
    ap.add_argument("--results", default=str(RESULTS), help=f"where the result file goes (default {RESULTS})")
    ap.add_argument("--table", metavar="FILE", help="print a result file as Markdown tables, and measure nothing")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text()), Path(args.table).name))
        return 0
    device = resolve_device(args.device)
    budget = 1.0 if args.quick else 3.0
    torch.manual_seed(0)

    peak = mm_peak(device, budget)
    bw = copy_bandwidth(device, budget)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads: "
          f"torch.mm peak {peak:.1f} GFLOP/s, copy bandwidth {bw:.1f} GB/s", flush=True)
    M = args.models
    cifar = cifar_rows(device, peak, budget, M) if args.only != "mlp" else []
    if args.only == "cifar":
        save({"device": device, "mm_peak_gflops": peak, "copy_gb_per_s": bw, "cifar": cifar}, args)
        return 0
    d = load("mnist", 0.2, 0, 0, device)

    head = (f"{'width':>5} {'depth':>5} {'set':>4} | {'(a) textbook':>12} {'(b) single':>10} {'(c) batched':>11} "
            f"| {'(b)/(a)':>7} {'(c)/(a)':>7} {'max':>5} | {'GFLOP/s (c)':>11} {'of mm':>6} "
            f"| {'eff (a)':>7} {'eff (b)':>7} {'eff (c)':>7} {'M':>3} "
            f"| {'(d) vmap':>8} {'(c)/(d)':>7}")
    print(f"model-epochs per second (an epoch = {STEPS_PER_EPOCH} steps of 128); (c) trains M models at once: "
          f"up to {M}, as many as the sweep stacks")
    print(head)
    print("-" * len(head))
    rows = []
    for width in (10, 100, 784):
        for depth in (2, 14):
            for tset in ("bn", "all", "random"):
                cfg = resolve("report", model="mlp", width=width, depth=depth, trainable=tset)
                flops, bytes_ = work_per_step(cfg)
                floor_step = floor_seconds(flops, bytes_, peak, bw)
                m = sweep_stack(cfg, M, device)
                runs = interleaved([textbook(cfg, d, device), engine_step(cfg, d, device, 1),
                                    engine_step(cfg, d, device, m), vmap_step(cfg, d, device, m)], device, budget)
                t_a, t_b, t_c, t_d = runs[0], runs[1], [t / m for t in runs[2]], [t / m for t in runs[3]]  # per model-step
                ta, tb, tc, td = (statistics.median(t) for t in (t_a, t_b, t_c, t_d))
                r_ba, r_ca, r_dc = ratio(t_a, t_b), ratio(t_a, t_c), ratio(t_d, t_c)
                eps = [1 / (t * STEPS_PER_EPOCH) for t in (ta, tb, tc)]
                gflops_c = flops / tc / 1e9
                row = {"width": width, "depth": depth, "set": tset, "batched_models": m,
                       "model_epochs_per_s": {"textbook": eps[0], "single": eps[1], "batched": eps[2]},
                       "ratio_single_vs_textbook": r_ba, "ratio_batched_vs_textbook": r_ca,
                       "ratio_batched_vs_vmap": r_dc, "rounds": ROUNDS,
                       "gflops_batched": gflops_c, "fraction_of_mm_peak": gflops_c / peak,
                       "efficiency_textbook": floor_step / ta, "efficiency_single": floor_step / tb,
                       "efficiency_batched": floor_step / tc, "max_ratio_vs_textbook": ta / floor_step,
                       "bound": "flops" if flops / (peak * 1e9) >= bytes_ / (bw * 1e9) else "memory"}
                rows.append(row)
                print(f"{width:>5} {depth:>5} {tset:>4} | {eps[0]:>12.2f} {eps[1]:>10.2f} {eps[2]:>11.2f} "
                      f"| {r_ba:>6.1f}x {r_ca:>6.1f}x {ta / floor_step:>4.{0 if ta / floor_step >= 99.95 else 1}f}x "
                      f"| {gflops_c:>11.1f} {gflops_c / peak:>6.0%} "
                      f"| {floor_step / ta:>7.0%} {floor_step / tb:>7.0%} {floor_step / tc:>7.0%} {m:>3} "
                      f"| {1 / (td * STEPS_PER_EPOCH):>8.2f} {r_dc:>6.1f}x", flush=True)
    subset, epochs = (8000, 3) if args.quick else (0, 3)
    print(f"end to end: 3 seeds of each set, {epochs} epochs at most, "
          f"{f'{subset:,} images' if subset else 'all of MNIST'}; a sweep (start-up, validation, test, store) "
          "vs the textbook loop over the same runs", flush=True)
    e2e = []
    for width, depths, sets, n in ((10, (2, 4), NARROW_SETS, 0), (100, (2,), REPORT_SETS, subset),
                                   (784, (2,), REPORT_SETS, subset)):
        r = end_to_end(width, depths, n, epochs, device, sets)  # the narrow row on all of MNIST, --quick or not
        e2e.append(r)
        print(f"  width {width:>4} depth {r['depth']}, {', '.join(sets)}: {r['runs']} runs, {r['model_epochs']} "
              f"model-epochs: sweep {r['seconds_engine']:.1f} s, textbook {r['seconds_textbook']:.1f} s -> "
              f"{r['ratio']:.1f}x", flush=True)
    print("stack policies: the sets of an architecture apart (one stack per kind) or shared, 3 epochs of all "
          "of MNIST, interleaved rounds", flush=True)
    policies = stack_policies(device)
    for p in policies:
        print(f"  width {p['width']} depth {p['depth']}: apart {statistics.median(p['seconds_apart']):.1f} s, "
              f"shared {statistics.median(p['seconds_shared']):.1f} s -> {p['ratio']:.2f}x", flush=True)
    save({"device": device, "mm_peak_gflops": peak, "copy_gb_per_s": bw, "batched_models": M, "end_to_end": e2e,
          "stack_policies": policies, "configs": rows, "cifar": cifar}, args)


if __name__ == "__main__":
    sys.exit(main())
