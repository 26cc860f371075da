"""The training engine: one loop that trains a group of runs (M >= 1) as one vectorized stack.

`bnonly train` calls it with one run; a sweep with a group that sweeps/grouping.py planned.
Per model: its own masks, BatchNorm statistics, early stopping (a stopped model keeps its best
weights and leaves the stack, so it stops costing compute). Data order is a function of the seed
alone, so runs of one seed see the same mini-batches whatever else is in the group.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from ..config.run import RunConfig
from ..errors import ConfigError
from ..registry.data import fingerprint, split_sizes
from ..registry.nets import Net, build
from ..registry.sets import SETS
from ..version import code_version
from . import checkpoint, resident
from .device import EngineOptions, machine, resolve_device
from .functional import FunctionalStack
from .fused import FusedStack
from .masks import Plan, pack, plan
from .stack import PER_MODEL_FIELDS, Batch, Rows, Stack, shared_config, stack_order


@dataclass
class Hooks:
    """Progress callbacks (all optional)."""
    batch: object = None   # batch(epoch, b, n_batches, n_models) after every optimisation step
    epoch: object = None   # epoch(epoch, n_active) after every epoch


@dataclass
class Result:
    config: RunConfig
    status: str = "finished"           # finished | diverged
    history: list = field(default_factory=list)  # per epoch: train_loss, train_accuracy, val_loss, val_accuracy, lr
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
    artefact: bytes | None = field(default=None, repr=False)  # what trained, packed (masks.pack)
    data: str = ""                     # the data it trained on (registry.data.fingerprint); "given" for passed tensors
    parts: list = field(default_factory=list)  # where it trained: one entry, or one per resumed part (checkpoint.py)

    def summary(self) -> dict:
        """The run as a dict of plain values (what `bnonly train --json` prints and the store keeps):
        its fields but the model, its run id and configuration, and `versions`: the machine it ran on,
        the code that ran it (the store stamps the code of the process that writes the row) and the
        data it trained on."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("config", "model", "artefact", "data", "parts")}
        resumed = {"parts": self.parts} if len(self.parts) > 1 else {}  # a run that resumed: each part's code and CPU
        return {"run_id": self.config.run_id, "config": self.config.__dict__.copy(), **out,
                "versions": {**machine(self.device), **code_version(), "data": self.data, **resumed}}


def stack_of(models: list[torch.nn.Module], plans: list[Plan], device="cpu",
             options: EngineOptions | None = None) -> Stack:
    """The stack that trains these models: FusedStack for a chain of blocks (`Net`), else FunctionalStack."""
    return (FusedStack if isinstance(models[0], Net) else FunctionalStack).from_models(models, plans, device, options)


def batches_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size + (1 if n % batch_size >= 2 else 0)  # a last batch of one would break BatchNorm


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[idx] for an [R, B] index (index_select on rows is several times faster than x[idx] on CPU)."""
    return x.view(len(x), -1).index_select(0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])


@torch.no_grad()
def evaluate(stack: Stack, batch: Batch, example_shape, chunk: int = 0):
    """Per-model mean cross-entropy and accuracy over a batch's examples in inference mode, in
    chunks of stack.chunk_size examples (each example_shape, e.g. (1, 28, 28)): two [M] tensors."""
    M, n = stack.size, batch.y.shape[1]
    chunk = chunk or stack.chunk_size(n, example_shape)
    loss = torch.zeros(M, device=batch.y.device, dtype=torch.float64)
    correct = torch.zeros(M, device=batch.y.device, dtype=torch.float64)
    for s in range(0, n, chunk):
        part = batch.examples(s, s + chunk)
        logits, y = stack.forward(part, training=False), part.labels
        loss += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                reduction="none").view(M, -1).sum(1)
        correct += (logits.argmax(-1) == y).sum(1)
    return loss / n, correct / n


def step(stack: Stack, batch: Batch, bufs: dict, lr: float, momentum: float, weight_decay: float, bf16: bool = False):
    """One SGD step of every model in the stack on its row of the batch. Gradients, momentum and
    weight decay are multiplied by the trainable masks, so frozen entries get an exact zero update.
    Returns the per-model mean losses [M] and the logits."""
    trainable = [(n, p) for n, p in stack.params.items() if p.requires_grad]
    y = batch.labels
    with torch.set_grad_enabled(bool(trainable)), torch.autocast(y.device.type, torch.bfloat16, enabled=bf16):
        logits = stack.forward(batch, training=True).float()
        loss_m = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                 reduction="none").view(y.shape).mean(1)
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
        else:  # contiguous: a batched matmul's weight gradient comes out transposed, and foreach ops on it run slower
            moms = [g.contiguous() for g in grads]
            bufs.update((n, g) for (n, _), g in zip(trainable, moms))
        masked = [(m, stack.masks[n]) for (n, _), m in zip(trainable, moms) if stack.masks[n] is not None]
        if masked:  # frozen entries: zero step, momentum and decay included
            torch._foreach_mul_([m for m, _ in masked], [k for _, k in masked])
        torch._foreach_add_(params, moms, alpha=-lr)
    return loss_m.detach(), logits


class FirstLayerCache:
    """A frozen first layer computed once per seed for the whole data set (train, validation, test).

    Where no model of a group trains the first layer's weight whole (every set but `all`, `all-nobn`
    and a convolutional model's `random`), that layer's output for an image never changes and is
    the same for every model of one seed (they share their random weights). So it is computed once,
    before training, and each step gathers its rows instead of multiplying every batch by every
    model's weights. `train`, `val`, `test`: [S, N, ...], one slice per seed of the group."""

    def __init__(self, train, val, test):
        self.train, self.val, self.test = train, val, test

    @classmethod
    def build(cls, stack: Stack, rows: Rows, cfg: RunConfig, data) -> "FirstLayerCache | None":
        """None where it does not apply: a first layer that trains, augmented inputs, bf16 autocast
        (the cached fp32 output would differ from the autocast one), or an output larger than
        options.first_layer_cache_mb. rows: every model of the stack, by seed."""
        if not stack.shares_first_layer or cfg.precision == "bf16" or cfg.augment:
            return None
        n = len(data.y_train) + len(data.y_val) + len(data.y_test)
        out = stack.first_layer(data.x_train[:2], 0)
        if len(rows) * n * out[0].numel() * out.element_size() > stack.options.first_layer_cache_mb * 2 ** 20:
            return None

        def run(x):
            chunk = 4096
            return torch.stack([torch.cat([stack.first_layer(x[i:i + chunk], m) for i in range(0, len(x), chunk)])
                                for m in rows.first_model])
        return cls(run(data.x_train), run(data.x_val), run(data.x_test))

    def batch(self, idx: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """The training examples idx [R, B] of the seeds at positions seeds [R]: [R, B, ...]."""
        S, N = self.train.shape[:2]
        return gather(self.train.view(S * N, *self.train.shape[2:]), idx + seeds.unsqueeze(1) * N)


def refuse_on_device(cfgs: list[RunConfig], device: str) -> None:
    """One computation, one run: tf32 is a CUDA matmul mode, so on a CPU it would compute fp32 under
    another run id; refused in one line."""
    if device != "cuda" and any(c.precision == "tf32" for c in cfgs):
        raise ConfigError("precision='tf32' is a CUDA matmul mode: on a CPU it computes fp32 under another run id; "
                          "use precision='fp32' (or --device cuda)")


def train(cfgs: list[RunConfig], device: str = "auto", data_dir: str | None = None, hooks: Hooks | None = None,
          options: EngineOptions | None = None, checkpoints: checkpoint.Checkpoints | None = None) -> list[Result]:
    """Train runs that differ only in PER_MODEL_FIELDS as one stack; one Result per config, in order.
    With `checkpoints`, the group resumes from its checkpoint where it has one, saves one at epoch
    ends, and raises checkpoint.Stopped once it has saved where checkpoints.stopping() says so."""
    hooks = hooks or Hooks()
    if len({shared_config(c) for c in cfgs}) != 1:
        raise ValueError("runs trained together must differ only in " + ", ".join(PER_MODEL_FIELDS))
    device = resolve_device(device)
    refuse_on_device(cfgs, device)
    order = stack_order(cfgs)
    if device == "cuda":  # TF32 only when asked for (PyTorch's default for matmuls is full fp32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfgs[0].precision == "tf32"
    t0 = time.perf_counter()
    ordered = [cfgs[i] for i in order]
    group = Training(ordered, device, data_dir, options=options)
    start, before, parts = 1, 0.0, []
    path = None if checkpoints is None else checkpoints.path([c.run_id for c in ordered])
    if path is not None:
        group, state = checkpoint.resumed(group, path, lambda: Training(ordered, device, data_dir, options=options))
        if state is not None:
            start, before, parts = state["epoch"] + 1, state["seconds"], state["parts"]
    m = machine(device)
    here = {"code": code_version()["code"], "from_epoch": start,
            "machine": {k: m.get(k) for k in ("device_name", "cpu_family", "cpu_model", "cpu_capability", "threads")}}
    saved = time.perf_counter()
    for epoch in range(start, group.cfg.max_epochs + 1):
        if len(group.active) == 0:
            break
        if checkpoints is not None and epoch == start and checkpoints.stopping():  # asked to stop before it began
            raise checkpoint.Stopped(start - 1)
        group.train_epoch(epoch, hooks)
        group.validate(epoch, hooks)
        if checkpoints is None or len(group.active) == 0 or epoch == group.cfg.max_epochs:
            continue
        stop = checkpoints.stopping()
        if stop or time.perf_counter() - saved >= checkpoints.every:
            spent = before + time.perf_counter() - t0
            try:
                checkpoint.save(path, checkpoint.state_of(
                    group, epoch, spent, parts + [{**here, "to_epoch": epoch, "seconds": spent - before}]))
            except OSError as e:  # (a full disk: the group trains on, from its last checkpoint if it stops)
                if stop:
                    raise
                print(f"bnonly: checkpoint {path}: cannot write it ({e.strerror or e}); the group trains on",
                      file=sys.stderr)
            saved = time.perf_counter()
        if stop:
            raise checkpoint.Stopped(epoch)
    results = group.finish()
    spent = time.perf_counter() - t0  # the test evaluation included
    for r in results:
        r.seconds = (before + spent) / len(results)
        r.parts = parts + [{**here, "to_epoch": r.epochs_run, "seconds": spent}]
    out = [None] * len(cfgs)
    for j, i in enumerate(order):
        out[i] = results[j]
    return out


class Training:
    """One group of runs in training: its stack of active models and, per model of the whole group
    (index g), the best weights, early-stopping counters and Result. The stack holds only the
    models still training; `active` maps its rows to g."""

    def __init__(self, cfgs: list[RunConfig], device: str, data_dir: str | None, data: resident.Tensors | None = None,
                 options: EngineOptions | None = None):
        """data: what to train on instead of cfg's data set (benchmarks on generated batches)."""
        self.cfgs, self.cfg, self.device = cfgs, cfgs[0], device
        c0 = self.cfg
        self.data = data if data is not None else resident.load(c0.dataset, c0.val_fraction, c0.data_seed, c0.subset,
                                                                device, data_dir, c0.normalize)
        source = "given" if data is not None else fingerprint(c0.dataset, data_dir)
        self.options = options or EngineOptions.for_device(device)
        self.models = [build(c, self.data.input_shape) for c in cfgs]
        self.plans = [plan(m, c) for m, c in zip(self.models, cfgs)]
        self.stack = stack_of(self.models, self.plans, device, self.options)
        M = len(cfgs)
        self.results = [Result(c, trainable_params=p.count(m), trainable_by_layer=p.by_layer(m),
                               total_params=sum(q.numel() for q in m.parameters()), device=device, group_size=M,
                               data=source)
                        for c, m, p in zip(cfgs, self.models, self.plans)]
        self.active = torch.arange(M, device=device)
        self.best = {**{n: p.detach().clone() for n, p in self.stack.params.items()},
                     **{n: b.clone() for n, b in self.stack.buffers.items()}}
        self.best_val = [math.inf] * M
        self.bad = [0] * M
        self.seeds = sorted({c.seed for c in cfgs})
        self.gens = {s: torch.Generator().manual_seed(s) for s in self.seeds}
        self.seed_of = [self.seeds.index(c.seed) for c in cfgs]  # each model's seed, as its position in self.seeds
        self.rows = Rows(self.seed_of, device)
        self.first = FirstLayerCache.build(self.stack, self.rows, c0, self.data)
        # `none` trains nothing: one pass gives BatchNorm its statistics, then it is evaluated and stops
        self.one_pass = [SETS[c.trainable].trains_nothing for c in cfgs]
        self.n_batches = batches_per_epoch(len(self.data.y_train), c0.batch_size)
        self.bufs: dict[str, torch.Tensor] = {}  # momentum buffers of the active models
        self.lr = c0.lr
        self.train_loss = self.train_acc = None

    def batches(self):
        """The epoch's training batches of the active models. Data order is each seed's own (its
        generator), and each seed's examples are gathered (and augmented) once for its models."""
        c0, d, device = self.cfg, self.data, self.device
        N, B = len(d.y_train), c0.batch_size
        perms = torch.stack([torch.randperm(N, generator=self.gens[s]) for s in self.seeds]).to(device)  # [S, N]
        rows = self.rows
        seeds = torch.tensor(rows.positions, device=device)  # the seed of each row
        needs_images = self.first is None or "blocks.0.op.weight" in self.stack.entries
        for b in range(self.n_batches):
            idx = perms[:, b * B:(b + 1) * B].index_select(0, seeds)  # [R, B]: each row's examples
            x = gather(d.x_train, idx) if needs_images else None
            if c0.augment:  # each seed's batch from its own generator (data order and augmentation)
                x = torch.stack([resident.augment(x[r], d.fill, self.gens[self.seeds[p]])
                                 for r, p in enumerate(rows.positions)])
            yield Batch(x, gather(d.y_train, idx), rows, None if self.first is None else self.first.batch(idx, seeds))

    def train_step(self, batch: Batch):
        """step() of the active models on one of batches()' batches, at the current learning rate."""
        c0 = self.cfg
        return step(self.stack, batch, self.bufs, self.lr, c0.momentum, c0.weight_decay, bf16=c0.precision == "bf16")

    def train_epoch(self, epoch: int, hooks: Hooks):
        """One pass over the training set: every active model on its seed's batches."""
        self.lr = self.cfg.lr_at(epoch)
        n_active = len(self.active)
        loss_sum = torch.zeros(n_active, device=self.device, dtype=torch.float64)
        correct = torch.zeros(n_active, device=self.device, dtype=torch.float64)
        for b, batch in enumerate(self.batches()):
            loss_m, logits = self.train_step(batch)
            with torch.no_grad():
                y = batch.labels
                loss_sum += loss_m.detach() * y.shape[1]
                correct += (logits.argmax(-1) == y).sum(1)
            if hooks.batch:
                hooks.batch(epoch, b + 1, self.n_batches, n_active)
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
            rows = torch.tensor(improved, device=self.device)  # in the stack
            models = self.active.index_select(0, rows)        # in the group
            for n, t in {**self.stack.params, **self.stack.buffers}.items():
                self.best[n].index_copy_(0, models, t.detach().index_select(0, rows))
        if hooks.epoch:
            hooks.epoch(epoch, len(keep))
        if len(keep) < len(self.active):
            kept = torch.tensor(keep, device=self.device, dtype=torch.long)
            self.stack = self.stack.select(kept)
            self.active = self.active.index_select(0, kept)
            self.bufs = {n: t.index_select(0, kept) for n, t in self.bufs.items()}
            self.rows = Rows([self.seed_of[g] for g in self.active.tolist()], self.device)

    def evaluate(self, stack: Stack, models: torch.Tensor, split: str, limit: int | None = None):
        """evaluate() of the stack holding `models` (group indices) on the validation or test set
        (its first `limit` images), from the first-layer cache where there is one."""
        x, y = getattr(self.data, f"x_{split}")[:limit], getattr(self.data, f"y_{split}")[:limit]
        rows = Rows([self.seed_of[g] for g in models.tolist()], self.device)  # one row per seed: its first layer
        first = None
        if self.first is not None:
            first = getattr(self.first, split)[:, :limit]
            if rows.positions != list(range(len(first))):
                first = first.index_select(0, torch.tensor(rows.positions, device=self.device))
        batch = Batch(x.unsqueeze(0).expand(len(rows), *x.shape), y.unsqueeze(0).expand(len(rows), -1), rows, first)
        return evaluate(stack, batch, self.data.input_shape)

    def finish(self) -> list[Result]:
        """Every model's best weights restored, evaluated on the test set once, and packed. A diverged
        run keeps its best epoch's weights, as the report's Keras early stopping would."""
        final = stack_of(self.models, self.plans, self.device, self.options)
        with torch.no_grad():
            for n, t in {**final.params, **final.buffers}.items():
                t.copy_(self.best[n])
        test_loss, test_acc = self.evaluate(final, torch.arange(len(self.results)), "test")
        for i, r in enumerate(self.results):  # (a run that diverged in its first epoch: its initial weights)
            r.test_loss, r.test_accuracy = float(test_loss[i]), float(test_acc[i])
            self.models[i].load_state_dict(final.state_dict(i))
            r.model = self.models[i].eval()
            r.artefact = pack(r.model, self.plans[i], self.data.input_shape)
        return self.results


MEASURED_IMAGES = 8192  # measure_seconds trains on at most this many images: a step costs what it costs on all


def measure_seconds(cfgs: list[RunConfig], device: str = "cpu", data_dir: str | None = None, batches: int = 3) -> dict:
    """Seconds this group spends per epoch (training steps of the real epoch loop, the faster of two
    rounds of `batches` steps after one warm-up step, plus validation) and once (building its models
    and stack, twice, and the test set), measured on a subset of the training images and scaled to
    the runs' own. Nothing is stored; the runs' own training starts from scratch."""
    t0 = time.perf_counter()
    device = resolve_device(device)
    c0 = cfgs[0]
    n_train, n_val = split_sizes(c0.dataset, c0.val_fraction, c0.subset, data_dir)
    data = resident.load(c0.dataset, c0.val_fraction, c0.data_seed, min(c0.subset or MEASURED_IMAGES, MEASURED_IMAGES),
                         device, data_dir, c0.normalize)
    group = Training([cfgs[i] for i in stack_order(cfgs)], device, data_dir, data=data)
    setup = time.perf_counter() - t0
    full, measured = batches_per_epoch(n_train, c0.batch_size), group.n_batches
    group.n_batches = 1
    group.train_epoch(1, Hooks())  # warm-up
    group.n_batches = min(batches, measured)
    rounds = []
    for epoch in (2, 3):  # the faster of two rounds: a passing load on the machine inflates one
        t0 = time.perf_counter()
        group.train_epoch(epoch, Hooks())
        rounds.append((time.perf_counter() - t0) / group.n_batches)
    n = min(2048, len(data.y_val))
    t0 = time.perf_counter()
    group.evaluate(group.stack, group.active, "val", limit=n)
    per_example = (time.perf_counter() - t0) / n
    return {"epoch": full * min(rounds) + n_val * per_example,
            "once": 2 * setup + len(data.y_test) * per_example}
