"""The report's sections, each a list of blocks for render.py: the headline, what was run, the
claims, the figures, the open questions, Frankle et al.'s setting, the other studies in the store,
and how to read it all.
"""
from __future__ import annotations

import shlex
from collections import Counter
from pathlib import Path

from ..registry.models import arch_name
from ..registry.sets import ordered
from ..study.claims import claims
from ..study.frankle import FRANKLE, frankle_claims
from ..study.headline import headline_answer, headline_sentences
from ..study.protocol import REPORT, off_protocol
from ..study.questions import Question, is_baseline
from ..study.cells import config_of, counted, describe_study
from ..study.verdicts import DECIDING, NOT_MEASURED
from ..sweeps.executors import duration
from ..version import label
from .figures import question_bars
from .render import claims_blocks, figure, note, table, text
from .tables import cifar_models, frankle_table

CONFIG_FIELDS = ("gamma_init", "hidden_beta", "hidden_bias", "bn_momentum", "bn_eps", "lr", "momentum",
                 "batch_size", "max_epochs", "patience", "lr_drop_epoch", "lr_drop_epochs", "weight_decay",
                 "augment", "normalize", "subset", "val_fraction",
                 "random_placement", "random_norm", "frozen_trunk_norm", "precision")
NEXT_STUDY = "claims"  # the shipped study that measures every claim at the protocol


def headline_section(rows, skipped: str | None, chance_rate: float, chance_basis: str) -> dict:
    blocks = [{"kind": "question", "text": "Does training only BatchNorm's affine parameters beat training the same "
                                           "number of randomly chosen weights?"}]
    if rows:
        blocks.append({"kind": "answer", "text": headline_answer(rows)})
        blocks += [text(sentence) for sentence in headline_sentences(rows)]
        blocks.append(figure("bn_vs_random.png", "Test accuracy of bn and random per architecture: mean and 95% "
                             "t interval over seeds; above each pair, the paired per-seed difference bn − random in "
                             f"points with its 95% interval; dashed: chance ({100 * chance_rate:.2f}%, "
                             f"{chance_basis}).",
                             "bn_vs_random.svg"))
    else:
        blocks.append(note(skipped or "No architecture with both bn and random runs."))
        blocks.append(text("`bnonly sweep quick` trains bn and random on six MLPs at the report's protocol."))
    return {"title": "BN-only against random weights", "blocks": blocks}


def claims_section(title: str, claims_list: list[dict], question: str | None = None) -> dict:
    blocks = [{"kind": "question", "text": question}] if question else []
    return {"title": title, "blocks": blocks + claims_blocks(claims_list, DECIDING)}


def point_to_next_study(claims_list: list[dict], study_name: str | None) -> None:
    """Each 'not measured' claim names the shipped study that measures it."""
    hint = (f" Run `bnonly sweep {NEXT_STUDY}` again to train the runs this store lacks (it resumes)."
            if study_name == NEXT_STUDY else
            f" Measured by `bnonly sweep {NEXT_STUDY}` (every claim at the report's protocol; it prints its estimated "
            "time on your machine before it trains).")
    for c in claims_list:
        if c["verdict"] == NOT_MEASURED:
            c["measured"] += hint


def frankle_section(runs) -> dict:
    header, rows = frankle_table(runs)
    return {"title": "Frankle et al.'s CIFAR setting", "blocks": [
        {"kind": "question", "text": "Do Frankle et al.'s CIFAR-10 findings hold: BN-only far above an equal number of "
                                     "random weights in sufficiently deep ResNets (and, bnonly's hypothesis, more so "
                                     "with depth)?"},
        table(header, rows, caption="Measured columns: mean ± 95% t interval over seeds (this store). Published "
              "columns are not measured here. The paper's abstract gives 82% for 'sufficiently deep ResNets', which "
              "bnonly places at ResNet-866, the deepest the paper trains (its per-depth table was not in the text "
              "available here); the TF reproduction is an unmerged community pull request with one run per model "
              "and another layout. Whether those BN-only runs trained the output layer is not stated in the text "
              "available here: in OpenLTH, Frankle et al.'s code, the BN-only flag others_frozen leaves it trainable "
              "(bnonly's bn+out) unless output_frozen is also set (bnonly's bn), so compare with both. "
              + FRANKLE.text + "."),
        *claims_blocks(frankle_claims(runs), DECIDING)]}



def question_sections(found: list[Question], out_dir: Path, written: dict, chance: float) -> list[dict]:
    """One section per open question a study answers: the question, its figure, each answer and its table."""
    out = []
    for q in found:
        blocks = [{"kind": "question", "text": q.question}]
        if q.conditions:
            png = question_bars(q.groups, q.conditions, q.trainable, out_dir, f"question_{q.key}", written,
                                f"{q.trainable} only: " + " vs ".join(q.conditions), chance)
            blocks.append(figure(png, f"{q.title}: mean and 95% interval over seeds"))
        for a in q.answers:
            blocks += [{"kind": "answer", "text": a.text}, table(a.header, a.rows, caption=a.caption)]
        out.append({"title": q.title, "blocks": blocks})
    return out


def code_versions(runs) -> Counter:
    """How many runs each code version (version.label) made."""
    return Counter(label(r.get("versions")) for r in runs)


def values_text(xs) -> str:
    xs = sorted({x for x in xs if x is not None}, key=lambda v: (str(type(v)), v))
    return ", ".join(map(str, xs)) if xs else "–"


def summary_text(runs, study: list[dict], sweep: dict | None = None, selected: bool = False,
                 estimate: dict | None = None) -> list[str]:
    """Sentences of the 'what was run' paragraph: the store (runs), then the study this report covers;
    `sweep` is the last sweep's config and `estimate` the compute it estimated (store meta)."""
    status = Counter(r.get("status") for r in runs)
    done = counted(study)
    mlp = [r for r in done if r.get("model") == "mlp"]
    out = [f"Last sweep: {sweep.get('name', '?')!r} with preset {sweep.get('preset', '?')!r}."] if sweep else []
    out += [f"{len(runs)} runs {'selected by --where' if selected else 'in the store'}: "
            + (", ".join(f"{n} {s}" for s, n in sorted(status.items(), key=str))
               or "none") + f"; {len(counted(runs))} count for the statistics."]
    missing = status.get("finished", 0) + status.get("diverged", 0) - len(counted(runs))
    if missing:
        out.append(f"{missing} finished or diverged run(s) without a finite test accuracy are left out.")
    diverged = [r for r in runs if r.get("status") == "diverged"]
    if diverged:
        out.append(f"{len(diverged)} diverged (a non-finite loss ended them; they count at their best weights' test "
                   "accuracy, and every table, claim and answer says how many of its runs diverged): " + "; ".join(
                       f"{arch_name(r)} {r.get('trainable')} seed {r.get('seed')}" for r in diverged[:10])
                   + ("; …" if len(diverged) > 10 else "") + ".")
    failed = [r for r in runs if r.get("status") == "failed"]
    if failed:
        out.append("Failed (not counted; a re-launch tries them again): " + "; ".join(
            f"{arch_name(r)} {r.get('trainable')} seed {r.get('seed')}" for r in failed[:10])
            + ("; …" if len(failed) > 10 else "") + ".")
    out.append(f"Models: {values_text(r.get('model') for r in done)}. "
               f"MLP widths: {values_text(r.get('width') for r in mlp)}; "
               f"depths (hidden layers): {values_text(r.get('depth') for r in mlp)}. Trainable sets: "
               f"{', '.join(ordered(r.get('trainable') for r in done)) or '–'}. "
               f"Seeds: {values_text(r.get('seed') for r in done)}.")
    cfgs = [config_of(r) for r in study]
    conf = [f"{k} = {values_text(c.get(k) for c in cfgs)}" for k in CONFIG_FIELDS if cfgs]
    if conf:
        out.append("Configuration: " + "; ".join(conf) + ".")
    secs = sum(float(r["seconds"]) for r in runs if r.get("seconds") is not None)
    out.append(f"Total compute: {secs:,.{0 if secs >= 100 else 1}f} s ({secs / 3600:.2f} h).")
    if estimate:
        out.append(f"The last sweep estimated about {duration(estimate['seconds'])} of compute for its "
                   f"{estimate['runs']} runs to train on {estimate['machine']} ({estimate['device']}, "
                   f"{estimate['threads']} thread{'s' if estimate['threads'] != 1 else ''} per group), every run "
                   "going to its max_epochs.")
    versions = code_versions(counted(runs))
    if len(versions) == 1:
        out.append(f"Code: every run by {next(iter(versions))}.")
    elif versions:
        out.append(f"These runs mix {len(versions)} code versions: " + "; ".join(
            f"{v} ({n} run{'s' if n != 1 else ''})" for v, n in versions.most_common()) + ".")
    return out


def budget_text(study: list[dict]) -> str:
    """The study's budget next to the report's protocol, and what that means for the verdicts."""
    done = [r for r in study if r.get("status") in ("finished", "diverged")]
    if not done:
        return "No finished runs, so no budget to state."
    c = config_of(done[0])  # the budget fields are part of the study, so every run shares them
    capped = sum(1 for r in done if (r.get("epochs_run") or 0) >= c["max_epochs"])
    data = f"a subset of {c['subset']:,} training images" if c["subset"] else "the whole training set"
    stopping = (f"early stopping with patience {c['patience']} within" if c["patience"] else "no early stopping,")
    budget = (f"Budget of this study: {data}, {100 * c['val_fraction']:.0f}% of it held out for validation, "
              f"{stopping} max_epochs = {c['max_epochs']}, lr {c['lr']}, batch "
              f"{c['batch_size']}; {capped} of {len(done)} runs ended at the epoch cap.")
    if len(cifar_models(done)) == len({r.get("model") for r in done}):
        return budget + (" Its models are Frankle et al.'s CIFAR models: the section 'Frankle et al.'s CIFAR setting' "
                         "judges its claims against their protocol.")
    if off_protocol(done) is None:
        return budget + " This is the report's protocol, so its claims can be judged here."
    return (budget + f" This is not the report's protocol ({REPORT.text}): a claim that rests on accuracies is "
            "'not testable at this budget' here; `bnonly sweep claims` runs the protocol.")


def how_to_read(chance_rate: float, chance_basis: str) -> str:
    return (f"Chance is {chance_basis}, {100 * chance_rate:.2f}% (what a network that always predicts "
            "the most common class scores; dashed grey line). Accuracies are test accuracies; a cell or "
            "line is the mean over seeds, and ± / the shaded band is the 95% Student-t interval over seeds "
            "(t quantile for n−1 degrees of freedom). With a single seed there is no interval (marked n=1). "
            "Comparisons between sets (claims 3-6, the open questions) use paired per-seed differences: runs of "
            "one seed share initial weights and data order. Runs whose configurations differ in anything but "
            "the seed, the architecture, the set or the setting a section varies are never pooled. "
            "Finished and diverged runs count (a diverged run at its best weights' test accuracy, marked 'k diverged' "
            "where it is); failed runs are listed above. "
            "In the parameters figure, runs with no trainable parameters (set 'none') are drawn at x = 1.")


def figure_items(written) -> list[tuple[str, str, str]]:
    """(png name, svg name, caption) for each drawn figure, in report order."""
    items = []
    if "accuracy_vs_depth.png" in written:
        items.append(("accuracy_vs_depth", "Test accuracy against depth, one panel per width, mean and 95% interval."))
        items += [(p[:-4], f"Test accuracy against depth at width {p[len('accuracy_vs_depth_w'):-4]}.")
                  for p in sorted(written, key=lambda s: (len(s), s))
                  if p.startswith("accuracy_vs_depth_w") and p.endswith(".png")]
    if "accuracy_vs_params.png" in written:
        items.append(("accuracy_vs_params", "Test accuracy against trainable parameters, every finished run "
                                            "(o = MLP, ^ = LeNet-5, D = ResNet, v = VGG; set 'none' has 0 parameters "
                                            "and is drawn at x = 1)."))
    if "learning_curves.png" in written:
        items.append(("learning_curves", "Validation accuracy against epoch, one panel per architecture, one line per "
                                         "set: the mean over the seeds still training at each epoch (an early-stopped "
                                         "run ends there), band: 95% interval while every seed still trains; "
                                         "dashed: the epoch cap, "
                                         "dotted: chance."))
    return [(f"{s}.png", f"{s}.svg", c) for s, c in items]




def other_studies(others, out_dir, where: dict | None, main_dataset) -> dict:
    rows = []
    for fields, rs in others:
        ds = main_dataset(rs)
        base = [r for r in rs if is_baseline(r) and config_of(r)["dataset"] == ds]
        verdicts = Counter(c["verdict"] for c in claims(base, ds))
        wheres = {**(where or {}), **fields}
        own = Path(out_dir) / ("study-" + "_".join(f"{k}-{v}" for k, v in fields.items()).replace("/", "-"))
        cmd = " ".join(["bnonly report", shlex.quote(str(out_dir))]  # into a directory of its own: not over this report
                       + [f"--where {shlex.quote(f'{k}={v}')}" for k, v in wheres.items()]
                       + ["--out", shlex.quote(str(own))])
        rows.append([describe_study(fields), str(len(rs)), ", ".join(f"{n} {v}" for v, n in verdicts.items()), cmd])
    return {"title": "Other studies in this store", "blocks": [
        text("These runs differ from the study above in more than the seed, so they are never pooled with it. "
             "Each is a study of its own; the command in the last column writes its full report into a directory of its "
             "own (not over this one)."),
        table(["study", "runs", "claims", "report it with"], rows,
              caption="runs = every run of the study (all seeds, every status); claims = how many of the study's "
                      "claims got each verdict, by the rules of the claims table above.")]}
