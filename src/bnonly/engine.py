"""The training engine: one loop that trains a group of runs (M >= 1) as one vectorized `Stack`.

`bnonly train` calls it with one run; the sweep with every seed x trainable set of one architecture.
Per model: its own masks, BatchNorm statistics, early stopping (a stopped model keeps its best
weights and leaves the stack, so it stops costing compute). Data order is a function of the seed
alone, so runs of one seed see the same mini-batches whatever else is in the group.
"""
from __future__ import annotations

import functools
import math
import os
import platform
import time
from dataclasses import dataclass, field

import numpy
import torch
import torch.nn.functional as F

from . import data as data_mod
from .config import ConfigError, RunConfig
from .models import MODELS, Net, build
from .sets import SETS
from .stacked import StackBase, splits_frozen_trunks, stack_of
from .trainable import pack, plan
from .version import __version__

# Fields that may differ between runs trained together; all others must match.
PER_MODEL_FIELDS = ("seed", "trainable", "random_placement", "random_norm", "random_allocation")


def group_key(cfg: RunConfig) -> str:
    """Runs with the same key can share a Stack (same architecture, data and optimisation)."""
    return cfg.replace(seed=0, trainable="all" if cfg.effective_norm != "none" else "all-nobn",
                       random_placement="scattered", random_norm="batch", random_allocation="even").canonical()


def dense_weight_gradients(cfg: RunConfig) -> bool:
    """Whether a run needs the dense gradient of hidden weights: sets that train whole hidden
    weights, and `random` in convolutional models. `random` in an MLP trains a few entries per
    weight matrix, whose gradients the stack gathers (stacked.SparseEntries) without the dense one."""
    s = SETS[cfg.trainable]
    return "hidden" in s.parts or (s.random_entries and MODELS[cfg.model].convolutional)


def stack_key(cfg: RunConfig) -> tuple[str, str]:
    """How the sweep batches runs: same group key, and alike in what their hidden weights need:
    "dense" gradients (`all`, LeNet-5's `random`; a stack computes them for every model if any model
    needs them), or none (`bn`-like sets, and an MLP's `random`, whose entries get gathered
    gradients): these share a first layer computed once per seed (FirstLayerCache)."""
    return group_key(cfg), "dense" if dense_weight_gradients(cfg) else "frozen"


def stack_order(cfg: RunConfig, split: bool = True) -> tuple[bool, int]:
    """Where a run sits in its stack: by seed (a seed's models share its batch), and with `split`
    the sets that train nothing before the head (`out`, `none`) after all others, where the stack
    runs them as a part of their own (stacked.splits_frozen_trunks, Stack.frozen_from)."""
    return split and SETS[cfg.trainable].frozen_trunk, cfg.seed


def sorted_for_stack(cfgs: list[RunConfig], device: str) -> list[int]:
    """The order of cfgs (indices) in their stack on `device` (stack_order)."""
    split = splits_frozen_trunks(build(cfgs[0]), device)
    return sorted(range(len(cfgs)), key=lambda i: stack_order(cfgs[i], split))


@dataclass
class Hooks:
    """Progress callbacks (all optional)."""
    batch: object = None   # batch(epoch, b, n_batches, n_models) after every optimisation step
    epoch: object = None   # epoch(epoch, n_active) after every epoch


@dataclass
class Result:
    config: RunConfig
    status: str = "finished"           # finished | diverged
    history: list = field(default_factory=list)  # per epoch: train_loss, train_acc, val_loss, val_acc, lr
    best_epoch: int = 0
    epochs_run: int = 0
    val_loss: float = math.nan
    val_accuracy: float = math.nan
    test_loss: float = math.nan
    test_accuracy: float = math.nan
    trainable_params: int = 0
    trainable_by_layer: dict = field(default_factory=dict)
    total_params: int = 0
    seconds: float = 0.0               # this run's share of the group's wall time
    group_size: int = 1
    device: str = "cpu"
    model: Net | None = field(default=None, repr=False)      # the trained model (best weights), on the CPU
    artefact: bytes | None = field(default=None, repr=False)  # what trained, packed (trainable.pack)

    def summary(self) -> dict:
        return {"run_id": self.config.run_id, "status": self.status,
                "test_accuracy": self.test_accuracy, "test_loss": self.test_loss,
                "val_accuracy": self.val_accuracy, "val_loss": self.val_loss,
                "best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
                "trainable_params": self.trainable_params, "trainable_by_layer": self.trainable_by_layer,
                "total_params": self.total_params, "seconds": self.seconds, "group_size": self.group_size,
                "device": self.device, "history": self.history, "config": self.config.__dict__.copy(),
                "versions": versions(self.device)}


def versions(device: str = "cpu") -> dict:
    """What a run's numbers depend on besides its config: library versions and the processor."""
    return {"bnonly": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "device_name": device_name(device),
            "threads": torch.get_num_threads()}  # a matmul's summation order, hence the last bits, depend on it


@functools.lru_cache(maxsize=None)  # read once per process, not once per stored run
def device_name(device: str) -> str:
    """'NVIDIA H100 80GB HBM3' for cuda; the CPU's model name (from /proc/cpuinfo where there is one)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        name = ""
    return name or platform.processor() or platform.machine()


def describe_device(device: str, threads: int = 0) -> str:
    """The line printed before training: 'device: cuda (NVIDIA H100 80GB HBM3)', 'device: cpu (AMD
    EPYC, 2 threads)' (threads: per group, default torch's)."""
    extra = "" if device == "cuda" else f", {threads or torch.get_num_threads()} threads"
    return f"device: {device} ({device_name(device)}{extra})"


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    """'auto' (the default everywhere): cuda when PyTorch sees a GPU, else cpu."""
    if device not in DEVICES:
        raise ConfigError(f"device {device!r}: must be one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but this PyTorch sees no CUDA GPU")
    return device


def batches_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size + (1 if n % batch_size >= 2 else 0)  # a last batch of one would break BatchNorm


@torch.no_grad()
def evaluate(stack: StackBase, x: torch.Tensor, y: torch.Tensor, chunk: int = 0, shared=None, first_done: bool = False,
             raw: torch.Tensor | None = None):
    """Per-model mean cross-entropy and accuracy over (x, y) in inference mode: two [M] tensors.
    x [N, ...] is read by every model; or, with `shared` (Stack.forward), x [S, N, ...] holds one
    input per row (with first_done, the first layer's output per seed: FirstLayerCache, and raw
    [N, ...] the images, for a first layer with trained entries)."""
    M = stack.size
    if shared is None:
        x, shared = x.unsqueeze(0), [(0, 0, M)]
    chunk = chunk or stack.eval_chunk(len(y), tuple((x if raw is None else raw.unsqueeze(0)).shape[2:]))
    loss = torch.zeros(M, device=x.device, dtype=torch.float64)
    correct = torch.zeros(M, device=x.device, dtype=torch.float64)
    for s in range(0, len(y), chunk):
        xb, yb = x[:, s:s + chunk], y[s:s + chunk]
        rb = None if raw is None else raw[s:s + chunk].unsqueeze(0).expand(len(x), *raw[s:s + chunk].shape)
        logits = stack.forward(xb, training=False, shared=shared, first_done=first_done, raw=rb)
        loss += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.repeat(M), reduction="none").view(M, -1).sum(1)
        correct += (logits.argmax(-1) == yb).sum(1)
    return loss / len(y), correct / len(y)


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[idx] for an [M, B] index (index_select on rows is several times faster than x[idx] on CPU)."""
    return x.view(len(x), -1).index_select(0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])


def shared_runs(pos: list[int]):
    """Per-model seed positions (in stack order: each seed's models contiguous, or in two runs where
    the frozen-trunk sets sit last, see stack_order) -> the seeds to gather a batch for, once each,
    and the runs of models reading one of them, as (its row in that gather, first model, end model):
    one gather (and one augmentation) per seed, not per model."""
    seeds, shared = [], []
    for m, p in enumerate(pos):
        if shared and seeds[shared[-1][0]] == p:
            shared[-1][2] = m + 1
        else:
            if p not in seeds:
                seeds.append(p)
            shared.append([seeds.index(p), m, m + 1])
    return seeds, [tuple(t) for t in shared]


# The first layer's output for the whole data set is kept (per seed) when it fits this budget:
# 3 seeds x 70,000 MNIST images x 784 features = 0.66 GB. Above it, the layer runs per batch, still
# once per seed. Set BNONLY_FIRST_LAYER_CACHE_MB=0 to always stream.
FIRST_LAYER_CACHE_MB = float(os.environ.get("BNONLY_FIRST_LAYER_CACHE_MB", 1024))


class FirstLayerCache:
    """A frozen first layer computed once per seed for the whole data set (train, validation, test).

    Where no model of a group trains the first layer's dense weight (bn, bn+out, out, none, gamma,
    beta, and an MLP's random, whose trained entries Stack._first_entries adds), that layer's output for an image never changes during training and is the same for every
    model of one seed (they share their random weights). So it is computed once, before training,
    and each step gathers its rows instead of multiplying every batch by every model's weights.
    `train`, `val`, `test`: [S, N, ...], one slice per seed position of the group."""

    def __init__(self, train, val, test):
        self.train, self.val, self.test = train, val, test

    @classmethod
    def build(cls, stack: StackBase, cfgs: list[RunConfig], seeds: list[int], data) -> "FirstLayerCache | None":
        """None where it does not apply: a first layer that trains, augmented inputs, bf16 autocast
        (the cached fp32 output would differ from the autocast one), models of one seed with
        different first layers, or an output larger than FIRST_LAYER_CACHE_MB."""
        if not stack.first_layer_frozen or cfgs[0].precision == "bf16" or cfgs[0].augment:
            return None
        owners = stack.first_layer_owners()
        reps = [next(i for i, c in enumerate(cfgs) if c.seed == s) for s in seeds]
        if any(owners[i] != owners[reps[seeds.index(c.seed)]] for i, c in enumerate(cfgs)):
            return None
        n = len(data.y_train) + len(data.y_val) + len(data.y_test)
        out = stack.first_layer(data.x_train[:2], reps[0])
        if len(seeds) * n * out[0].numel() * out.element_size() > FIRST_LAYER_CACHE_MB * 2 ** 20:
            return None

        def run(x):
            chunk = 4096
            return torch.stack([torch.cat([stack.first_layer(x[i:i + chunk], r) for i in range(0, len(x), chunk)])
                                for r in reps])
        return cls(run(data.x_train), run(data.x_val), run(data.x_test))

    def batch(self, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The training rows idx [S', B] of the seeds at positions rows [S']: [S', B, ...]."""
        S, N = self.train.shape[:2]
        return gather(self.train.view(S * N, *self.train.shape[2:]), idx + rows.unsqueeze(1) * N)


def seed_rows(pos: list[int]):
    """shared_runs with each row being the seed's position in the group (an index into a FirstLayerCache)."""
    seeds, shared = shared_runs(pos)
    return [(seeds[row], a, b) for row, a, b in shared]


def step(stack: StackBase, xb: torch.Tensor, yb: torch.Tensor, bufs: dict, lr: float, momentum: float,
         weight_decay: float, bf16: bool = False, shared=None, first_done: bool = False, raw=None):
    """One SGD step of every model in the stack on its own batch (xb [M, B, ...], yb [M, B]; or,
    with `shared`, xb [S, B, ...] holding each seed's batch once, see Stack.forward).
    Gradients, momentum and weight decay are multiplied by the trainable masks, so frozen entries
    get an exact zero update. Returns the per-model mean losses [M] and the logits."""
    trainable = [(n, p) for n, p in stack.params.items() if p.requires_grad]
    with torch.set_grad_enabled(bool(trainable)), torch.autocast(xb.device.type, torch.bfloat16, enabled=bf16):
        logits = stack.forward(xb, training=True, shared=shared, first_done=first_done, raw=raw).float()
        loss_m = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                 reduction="none").view(yb.shape).mean(1)
    if not trainable:
        return loss_m, logits
    params = [p for _, p in trainable]
    grads = list(torch.autograd.grad(loss_m.sum(), params))
    with torch.no_grad():  # SGD as torch.optim.SGD computes it, over all tensors at once
        if weight_decay:
            torch._foreach_add_(grads, params, alpha=weight_decay)
        if momentum and bufs:
            moms = [bufs[n] for n, _ in trainable]
            torch._foreach_mul_(moms, momentum)
            torch._foreach_add_(moms, grads)
        else:  # contiguous: a batched matmul's weight gradient comes out transposed (strided), and
            # every later step's foreach ops on a strided buffer run several times slower on CPU
            moms = [g.contiguous() for g in grads]
            bufs.update((n, g) for (n, _), g in zip(trainable, moms))
        masked = [(m, stack.masks[n]) for (n, _), m in zip(trainable, moms) if stack.masks[n] is not None]
        if masked:  # frozen entries: zero step, momentum and decay included
            torch._foreach_mul_([m for m, _ in masked], [k for _, k in masked])
        torch._foreach_add_(params, moms, alpha=-lr)
    return loss_m.detach(), logits


def train(cfgs: list[RunConfig], device: str = "auto", data_dir: str | None = None, hooks: Hooks | None = None) -> list[Result]:
    """Train runs that share a group key as one stack; returns one Result per config, in order."""
    hooks = hooks or Hooks()
    if len({group_key(c) for c in cfgs}) != 1:
        raise ValueError("runs trained together must differ only in " + ", ".join(PER_MODEL_FIELDS))
    device = resolve_device(device)
    order = sorted_for_stack(cfgs, device)
    if device == "cuda":  # TF32 only when asked for (PyTorch's default for matmuls is full fp32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfgs[0].precision == "tf32"
    t0 = time.perf_counter()
    group = Group([cfgs[i] for i in order], device, data_dir)
    for epoch in range(1, group.cfg.max_epochs + 1):
        if len(group.active) == 0:
            break
        group.train_epoch(epoch, hooks)
        group.validate(epoch, hooks)
    results = group.finish(time.perf_counter() - t0)
    out = [None] * len(cfgs)
    for j, i in enumerate(order):
        out[i] = results[j]
    return out


class Group:
    """The state of one group's training: its stack of active models and, per model of the whole
    group (index g), the best weights, early-stopping counters and Result. The stack holds only the
    models still training; `active` maps its rows to g."""

    def __init__(self, cfgs: list[RunConfig], device: str, data_dir: str | None, data: data_mod.Tensors | None = None):
        """data: what to train on instead of cfg's data set (benchmarks on generated batches)."""
        self.cfg, self.device = cfgs[0], device
        c0 = self.cfg
        self.data = data if data is not None else data_mod.load(c0.dataset, c0.val_fraction, c0.data_seed, c0.subset,
                                                                device, data_dir, c0.normalize)
        self.models = [build(c, self.data.input_shape) for c in cfgs]
        self.plans = [plan(m, c) for m, c in zip(self.models, cfgs)]
        self.stack = stack_of(self.models, self.plans, device)
        M = len(cfgs)
        self.results = [Result(c, trainable_params=p.count(m), trainable_by_layer=p.by_layer(m),
                               total_params=sum(q.numel() for q in m.parameters()), device=device, group_size=M)
                        for c, m, p in zip(cfgs, self.models, self.plans)]
        self.active = torch.arange(M, device=device)
        self.best = {**{n: p.detach().clone() for n, p in self.stack.params.items()},
                     **{n: b.clone() for n, b in self.stack.buffers.items()}}
        self.best_val = [math.inf] * M
        self.bad = [0] * M
        self.seeds = sorted({c.seed for c in cfgs})
        self.gens = {s: torch.Generator().manual_seed(s) for s in self.seeds}
        self.seed_pos = torch.tensor([self.seeds.index(c.seed) for c in cfgs], device=device)
        self.first = FirstLayerCache.build(self.stack, cfgs, self.seeds, self.data)
        # `none` trains nothing: one pass gives BatchNorm its statistics, then it is evaluated and stops
        self.one_pass = [SETS[c.trainable].trains_nothing for c in cfgs]
        self.n_batches = batches_per_epoch(len(self.data.y_train), c0.batch_size)
        self.bufs: dict[str, torch.Tensor] = {}  # momentum buffers of the active models
        self.lr = c0.lr
        self.train_loss = self.train_acc = None

    def batches(self):
        """The epoch's training batches for the active models, as step() takes them: (xb, yb,
        shared, raw) per batch. Data order is each seed's own (its generator), and each seed's batch
        is gathered (and augmented) once; where every model multiplies its own first-layer weights,
        xb holds one batch per model, gathered at once (shared None), not per seed and then copied
        per model (Stack.forward's `shared`)."""
        c0, d, device = self.cfg, self.data, self.device
        N, B = len(d.y_train), c0.batch_size
        perms = torch.stack([torch.randperm(N, generator=self.gens[s]) for s in self.seeds]).to(device)  # [S, N]
        pos = self.seed_pos.index_select(0, self.active)
        seed_list, shared = shared_runs(pos.tolist())
        rows = torch.tensor(seed_list, device=device)
        per_model = not c0.augment and not self.stack.first_layer_frozen  # (no FirstLayerCache then)
        for b in range(self.n_batches):
            batch = perms[:, b * B:(b + 1) * B]  # [S, Bb]: each seed's batch
            by_model = batch.index_select(0, pos)  # [Ma, Bb]: each model's examples
            yb = gather(d.y_train, by_model)
            if per_model:
                yield gather(d.x_train, by_model), yb, None, None
                continue
            idx = batch.index_select(0, rows)
            if self.first is not None:
                yield self.first.batch(idx, rows), yb, shared, gather(d.x_train, idx) if self.stack.first_has_entries else None
                continue
            xb = gather(d.x_train, idx)
            if c0.augment:  # each seed's batch from its own generator (data order and augmentation)
                xb = torch.stack([data_mod.augment(xb[r], d.fill, self.gens[self.seeds[p]]) for r, p in enumerate(seed_list)])
            yield xb, yb, shared, None

    def train_step(self, xb, yb, shared, raw):
        """step() of the active models on one of batches()' batches, at the current learning rate."""
        c0 = self.cfg
        return step(self.stack, xb, yb, self.bufs, self.lr, c0.momentum, c0.weight_decay,
                    bf16=c0.precision == "bf16", shared=shared, first_done=self.first is not None, raw=raw)

    def train_epoch(self, epoch: int, hooks: Hooks):
        """One pass over the training set: every active model on its seed's batches."""
        c0 = self.cfg
        self.lr = c0.lr_at(epoch)
        Ma = len(self.active)
        loss_sum = torch.zeros(Ma, device=self.device, dtype=torch.float64)
        correct = torch.zeros(Ma, device=self.device, dtype=torch.float64)
        for b, (xb, yb, shared, raw) in enumerate(self.batches()):
            loss_m, logits = self.train_step(xb, yb, shared, raw)
            with torch.no_grad():
                loss_sum += loss_m.detach() * yb.shape[1]
                correct += (logits.argmax(-1) == yb).sum(1)
            if hooks.batch:
                hooks.batch(epoch, b + 1, self.n_batches, Ma)
        N = len(self.data.y_train)
        self.train_loss, self.train_acc = (loss_sum / N).tolist(), (correct / N).tolist()

    def validate(self, epoch: int, hooks: Hooks):
        """Validation loss and accuracy of the active models, the epoch in each history, best weights
        kept, and models out of patience (or diverged) taken out of the stack."""
        val_loss, val_acc = self.evaluate(self.stack, self.active, "val")
        tl, ta, vl, va = self.train_loss, self.train_acc, val_loss.tolist(), val_acc.tolist()
        keep, improved = [], []
        for j, g in enumerate(self.active.tolist()):
            r = self.results[g]
            r.history.append({"epoch": epoch, "train_loss": tl[j], "train_accuracy": ta[j],
                              "val_loss": vl[j], "val_accuracy": va[j], "lr": self.lr})
            r.epochs_run = epoch
            if not (math.isfinite(tl[j]) and math.isfinite(vl[j])):
                r.status = "diverged"
                continue
            if vl[j] < self.best_val[g] or not self.cfg.patience:  # patience 0: the last epoch's weights
                self.best_val[g], self.bad[g] = vl[j], 0
                r.best_epoch, r.val_loss, r.val_accuracy = epoch, vl[j], va[j]
                improved.append(j)
            else:
                self.bad[g] += 1
            if (self.bad[g] < self.cfg.patience or not self.cfg.patience) and not self.one_pass[g]:
                keep.append(j)
        if improved:
            jj = torch.tensor(improved, device=self.device)
            gg = self.active.index_select(0, jj)
            for n, t in {**self.stack.params, **self.stack.buffers}.items():
                self.best[n].index_copy_(0, gg, t.detach().index_select(0, jj))
        if hooks.epoch:
            hooks.epoch(epoch, len(keep))
        if len(keep) < len(self.active):
            kk = torch.tensor(keep, device=self.device, dtype=torch.long)
            self.stack = self.stack.select(kk)
            self.active = self.active.index_select(0, kk)
            self.bufs = {n: t.index_select(0, kk) for n, t in self.bufs.items()}

    def evaluate(self, stack: StackBase, models: torch.Tensor, split: str, limit: int | None = None):
        """evaluate() of the stack holding `models` (group indices) on the validation or test set
        (its first `limit` images), from the first-layer cache where there is one."""
        y = getattr(self.data, f"y_{split}")[:limit]
        if self.first is None:
            return evaluate(stack, getattr(self.data, f"x_{split}")[:limit], y)
        shared = seed_rows(self.seed_pos.index_select(0, models.to(self.seed_pos.device)).tolist())
        raw = getattr(self.data, f"x_{split}")[:limit] if stack.first_has_entries else None
        return evaluate(stack, getattr(self.first, split)[:, :limit], y, shared=shared, first_done=True, raw=raw)

    def finish(self, seconds: float) -> list[Result]:
        """Every model's best weights restored, evaluated on the test set once, and packed."""
        final = stack_of(self.models, self.plans, self.device)
        with torch.no_grad():
            for n, t in {**final.params, **final.buffers}.items():
                t.copy_(self.best[n])
        test_loss, test_acc = self.evaluate(final, torch.arange(len(self.results)), "test")
        M = len(self.results)
        for i, r in enumerate(self.results):
            if r.best_epoch:
                r.test_loss, r.test_accuracy = float(test_loss[i]), float(test_acc[i])
            r.seconds = seconds / M
            self.models[i].load_state_dict(final.state_dict(i))
            r.model = self.models[i].eval()
            r.artefact = pack(r.model, self.plans[i], self.data.input_shape)
        return self.results


def calibrate(cfgs: list[RunConfig], device: str = "cpu", data_dir: str | None = None, batches: int = 3) -> dict:
    """Seconds this group spends per epoch (training steps of the real epoch loop, the faster of two
    rounds of `batches` steps after one warm-up step, plus validation) and once (building its models
    and stack, twice, and the test set). Nothing is stored; the runs' own training starts from scratch."""
    t0 = time.perf_counter()
    device = resolve_device(device)
    group = Group([cfgs[i] for i in sorted_for_stack(cfgs, device)], device, data_dir)
    setup = time.perf_counter() - t0
    full = group.n_batches
    group.n_batches = 1
    group.train_epoch(1, Hooks())  # warm-up
    group.n_batches = min(batches, full)
    rounds = []
    for epoch in (2, 3):  # the faster of two rounds: a passing load on the machine inflates one
        t0 = time.perf_counter()
        group.train_epoch(epoch, Hooks())
        rounds.append((time.perf_counter() - t0) / group.n_batches)
    per_step = min(rounds)
    d = group.data
    n = min(2048, len(d.y_val))
    t0 = time.perf_counter()
    group.evaluate(group.stack, group.active, "val", limit=n)
    per_example = (time.perf_counter() - t0) / n
    return {"epoch": full * per_step + len(d.y_val) * per_example,
            "once": 2 * setup + len(d.y_test) * per_example}
