"""Assemble ``benchmarks/RESULTS.md`` (and the README's results table, and the model cards' StampBirds figures)
from the committed JSON in ``benchmarks/results/``.

    python -m benchmarks.report            # write RESULTS.md, the README table and the model cards' figures
    python -m benchmarks.report --check    # exit 1 if a committed file differs from what this renders
    python -m benchmarks.report --decide   # recompute results/default_route_decision.json from the robustness JSONs

RESULTS.md is a headline block (every figure formatted from a JSON, each row linking to its section), then one
section per results file, each rendered by the ``render`` function of the script that owns it. Superseded
sections live verbatim in ``benchmarks/ARCHIVE.md`` (not rendered).

``results/default_route_decision.json`` (written by :func:`decide`, rendered in the headline between
``<!-- begin: default-route-decision -->`` and ``<!-- end: default-route-decision -->``)::

    {"rule": str,                      # the decision rule, in words
     "candidate": "backswap_edge", "baseline": "backswap",
     "metric": "worst_group", "scores": "as trained",
     "seed_count": int,                # the fewest paired seeds over the settings
     "settings": {"crop" | "photo": {"candidate": str, "baseline": str,
                                     "seeds": [int, ...],            # seeds with runs of both methods
                                     "n": int, "paired_diff_mean": float,
                                     "paired_diff_ci": float,        # 95 % t-interval half-width
                                     "ci_low": float, "ci_high": float,
                                     "entirely_below_zero": bool}},
     "candidate_becomes_default": bool,
     "outcome": str,                   # the rule's verdict, in words
     "computed_from": [str, ...], "computed_by": "benchmarks.report.decide"}

``results/demo.json``: the ``results.json`` ``backswap demo`` writes: ``settings`` (dict), ``segmenter``
(``before_finetune`` / ``after_finetune``: ``patch_balanced_accuracy``, ``tight_mask_iou``; ``cut_out``:
``tight_mask_iou``), ``bank`` (``size``, ``images_per_s``), ``classifiers`` (``erm`` / ``backswap``: ``average``,
``worst_group``, ``groups`` {name: accuracy}), ``seconds``, plus ``stage_seconds`` {stage: seconds} and
``machine`` (str); optional ``placeholder`` (str: says the file is not a fresh run), ``command``, ``code``,
``figure``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks._common import mean_ci, render_case_matrix

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
README = ROOT / "README.md"
CARDS = {"patchseg-tiny-s16": ROOT / "weights" / "patchseg-tiny-s16" / "README.md",
         "edgerefine-tiny": ROOT / "weights" / "edgerefine-tiny" / "README.md"}
DECISION = RESULTS_DIR / "default_route_decision.json"
ROBUSTNESS = {"crop": "robustness_64px_corr1.0_crop_v2.json", "photo": "robustness_64px_corr1.0_photo_v2.json"}
SETTING_NAMES = {"crop": "crops of the training photos", "photo": "held-out photos"}
MAIN_ROWS = (("erm", "ERM"), ("backswap", "BackSwap, paper's cut-out"), ("backswap_edge", "BackSwap, edge route"),
             ("backswap_gt", "BackSwap, true masks (oracle)"))


def load(name: str) -> dict:
    return json.loads((RESULTS_DIR / name).read_text())


def fmt(values: list[float], digits: int = 3) -> str:
    """``mean ± half`` of the 95 % t-interval (the robustness tables' format)."""
    mean, half = mean_ci(values)
    return f"{mean:.{digits}f}" if len(values) < 2 else f"{mean:.{digits}f} ± {half:.{digits}f}"


def provenance(name: str) -> str:
    entry = load("provenance.json")["files"].get(name)
    if entry is None:
        return ""
    return (f"{entry['machine']} (the date/machine line of the last render by the script, kept in "
            "`results/provenance.json`: this JSON records none)")


# ------------------------------------------------------------------------------------------------------------
# the default-route decision
# ------------------------------------------------------------------------------------------------------------

RULE = ("`{candidate}` becomes the default route only if on neither setting the paired difference "
        "`{candidate}` − `{baseline}` (worst-group accuracy as trained, paired by seed) has a 95 % t-interval lying "
        "entirely below 0.")


def worst_group_by_seed(records: dict, method: str) -> dict[int, float]:
    return {int(k.split("/seed")[1]): r["worst_group"] for k, r in records.items() if k.split("/")[0] == method}


def decide(records: dict[str, dict] | None = None, candidate: str = "backswap_edge", baseline: str = "backswap") -> dict:
    """The default-route decision from the robustness JSONs (``records``: {setting: records}; default: the
    committed files), by :data:`RULE`."""
    records = records or {s: load(f) for s, f in ROBUSTNESS.items()}
    settings = {}
    for setting, recs in records.items():
        cand, base = worst_group_by_seed(recs, candidate), worst_group_by_seed(recs, baseline)
        seeds = sorted(set(cand) & set(base))
        diffs = [cand[s] - base[s] for s in seeds]
        mean, half = mean_ci(diffs)
        settings[setting] = {"candidate": candidate, "baseline": baseline, "seeds": seeds, "n": len(seeds),
                             "paired_diff_mean": mean, "paired_diff_ci": half, "ci_low": mean - half,
                             "ci_high": mean + half, "entirely_below_zero": mean + half < 0}
    below = [s for s, v in settings.items() if v["entirely_below_zero"]]
    adopt = not below
    outcome = (f"`{candidate}` becomes the default: on no setting does its paired difference lie entirely below 0."
               if adopt else
               f"`{candidate}` does not become the default: its paired difference lies entirely below 0 on "
               + " and ".join(SETTING_NAMES[s] for s in below) + f"; `{baseline}` stays the reference route.")
    return {"rule": RULE.format(candidate=candidate, baseline=baseline), "candidate": candidate, "baseline": baseline,
            "metric": "worst_group", "scores": "as trained",
            "seed_count": min(v["n"] for v in settings.values()), "settings": settings,
            "candidate_becomes_default": adopt, "outcome": outcome,
            "computed_from": [f"benchmarks/results/{ROBUSTNESS[s]}" for s in records],
            "computed_by": "benchmarks.report.decide"}


def decision_lines(d: dict) -> list[str]:
    rows = []
    for setting in ("crop", "photo"):
        v = d["settings"][setting]
        rows.append(f"| `{v['candidate']}` − `{v['baseline']}`, {SETTING_NAMES[setting]} | {v['n']} | "
                    f"{v['paired_diff_mean']:.3f} ± {v['paired_diff_ci']:.3f} | [{v['ci_low']:+.5f}, {v['ci_high']:+.5f}] | "
                    f"{'yes' if v['entirely_below_zero'] else 'no'} |")
    return ["<!-- begin: default-route-decision -->",
            f"**Default route decision** (`results/default_route_decision.json`, {d['seed_count']} seeds). Rule: {d['rule']}",
            "",
            "| paired difference (worst group, as trained) | seeds | mean ± 95 % t-interval | interval | entirely below 0 |",
            "|---|---|---|---|---|", *rows, "", f"Outcome: **{d['outcome']}**", *_margin_note(d),
            "<!-- end: default-route-decision -->"]


def _margin_note(d: dict) -> list[str]:
    """A sentence when the outcome turns on an interval bound within 0.001 of zero (the rule's edge)."""
    close = [(s, v) for s, v in d["settings"].items() if abs(v["ci_high"]) < 1e-3]
    if not close:
        return []
    parts = [f"{SETTING_NAMES[s]}: upper bound {v['ci_high']:+.5f}, mean {v['paired_diff_mean']:+.3f}" for s, v in close]
    return ["", "The outcome turns on an interval bound within 0.001 of zero (" + "; ".join(parts) + "): there the "
            "candidate is neither shown worse nor shown better than the baseline, and its mean is what to expect. The "
            f"seed count ({d['seed_count']}, that of the paper's route and the oracle) was set before the candidate's last "
            "seeds were run, and no seed was added after."]


# ------------------------------------------------------------------------------------------------------------
# the demo section (results/demo.json: the results.json `backswap demo` writes)
# ------------------------------------------------------------------------------------------------------------

def render_demo(d: dict) -> str:
    s, seg = d["settings"], d["segmenter"]
    lines = ["## `backswap demo` (the main job, defaults)", ""]
    if d.get("placeholder"):
        lines += [f"**Old run, not regenerated:** {d['placeholder']}.", ""]
    lines += [f"`{d.get('command', 'backswap demo')}`" + (f" at {d['code']}" if d.get("code") else "")
              + f"; {d['seconds'] / 60:.1f} min wall; {d.get('machine', 'machine not recorded')}.", "",
              "Settings: " + ", ".join(f"{k} {v}" for k, v in s.items()) + ".", "",
              f"Segmenter on the test split: patch balanced accuracy "
              f"{seg['before_finetune']['patch_balanced_accuracy']:.3f} (bundled, zero-shot) → "
              f"{seg['after_finetune']['patch_balanced_accuracy']:.3f} (fine-tuned); its plain tight-mask IoU "
              f"{seg['before_finetune']['tight_mask_iou']:.3f} → {seg['after_finetune']['tight_mask_iou']:.3f}; the "
              f"swap's cut-out: tight-mask IoU **{seg['cut_out']['tight_mask_iou']:.3f}**. Bank: "
              f"{d['bank']['size']} backgrounds at {d['bank']['images_per_s']:.0f} images/s.", ""]
    groups = list(next(iter(d["classifiers"].values()))["groups"])
    lines += ["| method | average | worst group | " + " | ".join(groups) + " |", "|---|---|---|" + "---|" * len(groups)]
    for name, c in d["classifiers"].items():
        lines.append(f"| {name} | {c['average']:.3f} | {c['worst_group']:.3f} | "
                     + " | ".join(f"{c['groups'][g]:.3f}" for g in groups) + " |")
    if d.get("stage_seconds"):
        lines += ["", "Stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in d["stage_seconds"].items()) + "."]
    lines += ["", "One seed: the demo shows the pipeline; the robustness sections rank methods over seeds."]
    if d.get("figure"):
        lines += ["", f"![demo swap grid]({d['figure']})"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------------------------

def sections() -> list[tuple[str, str, str]]:
    """(name, anchor, markdown) of every current section, in report order."""
    from benchmarks import (bank_build, diagnose_stampbirds, finetune_cli, labeling_efficiency, mask_quality, robustness,
                            throughput)

    out = []
    for setting in ("crop", "photo"):
        f = ROBUSTNESS[setting]
        out.append((f.removesuffix(".json"), f"robustness-{setting}", robustness.render(load(f), setting, machine=provenance(f))))
    for name, anchor in (("mask_quality_crop", "mask-quality-crop"), ("mask_quality", "mask-quality-photo")):
        out.append((name, anchor, mask_quality.render_section(load(f"{name}.json"), provenance(f"{name}.json"))))
    le = load("labeling_efficiency.json")
    out.append(("labeling_efficiency", "labeling-efficiency", labeling_efficiency.render(
        le, provenance("labeling_efficiency.json"), load("provenance.json")["files"]["labeling_efficiency.json"]["load_end"])))
    out.append(("finetune_cli", "finetune-cli", finetune_cli.render(load("finetune_cli.json"))))
    out.append(("diagnose_stampbirds", "bg-gap", diagnose_stampbirds.render_cached(
        load("diagnose_stampbirds.json"), machine=provenance("diagnose_stampbirds.json"))))
    out.append(("bank_build", "bank-build", bank_build.render(load("bank_build.json"), load("throughput.json"))))
    out.append(("throughput", "throughput", throughput.render(load("throughput.json"))))
    out.append(("demo", "demo", render_demo(load("demo.json"))))
    out.append(("inpaint_quality", "inpaint-quality", stopgap("inpaint_quality_recorded.json")))
    out.append(("swap_grid", "swap-grid", stopgap("swap_grid_recorded.json")))
    out.append(("bank_scaling", "bank-scaling", stopgap("bank_scaling_recorded.json")))
    out.append(("input-matrix", "input-matrix", render_case_matrix(load("input_matrix.json"))))
    out.append(("file-error-matrix", "file-error-matrix", render_case_matrix(load("file_error_matrix.json"))))
    return out


def stopgap(name: str) -> str:
    d = load(name)
    return d["markdown"] + f"\n\n_Source: `results/{name}`: {d['note']}._"


# ------------------------------------------------------------------------------------------------------------
# the headline
# ------------------------------------------------------------------------------------------------------------

def headline() -> tuple[list[str], list[tuple[str, str]]]:
    """The headline block and the (figure, section anchor) pairs it claims (each figure must appear verbatim in
    that section: tests/test_results_report.py)."""
    from benchmarks import diagnose_stampbirds
    from benchmarks.robustness import CROP_CONFOUND

    claims: list[tuple[str, str]] = []

    def claim(text: str, anchor: str) -> str:
        claims.append((text, anchor))
        return text

    rob = {s: load(f) for s, f in ROBUSTNESS.items()}
    lines = ["## Headline", "",
             "Worst-group accuracy, StampBirds v2 at 64 px, train correlation 1.0, `small_cnn` from scratch "
             "(mean ± 95 % t-interval over seeds; seeds in brackets):", "",
             "| method | [crops of the training photos¹](#robustness-crop) | [held-out photos](#robustness-photo) |",
             "|---|---|---|"]
    for method, label in MAIN_ROWS:
        cells = []
        for s in ("crop", "photo"):
            vals = [v for _, v in sorted(worst_group_by_seed(rob[s], method).items())]
            cells.append(f"{claim(fmt(vals), f'robustness-{s}')} ({len(vals)})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"¹ {CROP_CONFOUND}", ""]
    d = json.loads(DECISION.read_text())
    for s in ("crop", "photo"):
        v = d["settings"][s]
        claim(f"{v['paired_diff_mean']:.3f} ± {v['paired_diff_ci']:.3f}", f"robustness-{s}")
    lines += decision_lines(d) + [""]

    mq = {s: load(n) for s, n in (("crop", "mask_quality_crop.json"), ("photo", "mask_quality.json"))}
    iou = {s: fmt([r["flip+edge"]["tight_iou"] for r in m["runs"].values()]) for s, m in mq.items()}
    ghost = {s: fmt([100 * r["flip+edge"]["holes"]["p>0.2, +2 px"]["ghost"] for r in m["runs"].values()], 2)
             for s, m in mq.items()}
    le = load("labeling_efficiency.json")
    st = le["settings"]

    def labels(strategy: str) -> str:
        mean, half = mean_ci([st["max_labels"] + st["step"] if n is None else n for n in le["labels_to_target"][strategy]])
        return f"{mean:.0f} ± {half:.0f}"

    ft = {r["start"]: r["best_val_balanced_accuracy"] for r in load("finetune_cli.json")["rows"]}
    yard = load("throughput.json")["cpu"]["yardstick"]["rates"]
    base = yard["loader alone (no swap)"]
    ratio = {k: f"{yard[k] / base:.2f}" for k in ("collate swap, segmenter on the fly (BackgroundSwapCollate)",
                                                  "collate swap, segmenter int8")}
    bank = {r["route"]: r["images_per_s"] for r in load("bank_build.json")["rows"] if r.get("route")}
    diag = load("diagnose_stampbirds.json")["64px_n1200_e5_ft4_l150_crop_pack2"]

    def gap(method: str) -> str:
        import torch

        vals = [r["bg_gap"]["gap"] for k, r in sorted(diag.items()) if k.split("/")[0] == method]
        m, lo, hi = diagnose_stampbirds.mean_interval(torch.tensor(vals))
        return f"{m:.3f} ± {(hi - lo) / 2:.3f}"

    ft_b, ft_s = f"{ft['bundled weights']:.3f}", f"{ft['from scratch']:.3f}"
    bank_e, bank_p = f"{bank['edge']:.1f}", f"{bank['paper']:.1f}"
    lines += ["| measure | value | section |", "|---|---|---|",
              f"| tight-mask IoU of the edge cut-out (`flip+edge`), crops¹ / held-out photos (3 seeds) | "
              f"{claim(iou['crop'], 'mask-quality-crop')} / {claim(iou['photo'], 'mask-quality-photo')} | "
              "[mask quality, crops](#mask-quality-crop), [photos](#mask-quality-photo) |",
              f"| ghost pixels left by the edge route's bank hole (p > 0.2, +2 px), % of the object, crops¹ / photos | "
              f"{claim(ghost['crop'], 'mask-quality-crop')} / {claim(ghost['photo'], 'mask-quality-photo')} | "
              "[mask quality, crops](#mask-quality-crop), [photos](#mask-quality-photo) |",
              f"| patch labels to reach balanced accuracy {st['target']:.2f}: `kcenter` / `random` order "
              f"({len(le['labels_to_target']['random'])} seeds, val held out by crop¹) | {claim(labels('kcenter'), 'labeling-efficiency')} / "
              f"{claim(labels('random'), 'labeling-efficiency')} | [labeling efficiency](#labeling-efficiency) |",
              f"| `backswap finetune`, best val patch balanced accuracy: bundled start / from scratch (one run) | "
              f"{claim(ft_b, 'finetune-cli')} / {claim(ft_s, 'finetune-cli')} | "
              "[finetune](#finetune-cli) |",
              f"| CPU loader with the collate swap / loader alone, segmenter float / int8 (224², one core) | "
              f"{claim(ratio['collate swap, segmenter on the fly (BackgroundSwapCollate)'], 'throughput')}× / "
              f"{claim(ratio['collate swap, segmenter int8'], 'throughput')}× | [throughput](#throughput) |",
              f"| bank build at 224², images/s: edge route / paper route (1 thread, side by side) | "
              f"{claim(bank_e, 'bank-build')} / {claim(bank_p, 'bank-build')} | "
              "[bank build](#bank-build) |",
              f"| label-free BG-gap (crops¹, 3 seeds): ERM / BackSwap / true masks | {claim(gap('erm'), 'bg-gap')} / "
              f"{claim(gap('backswap'), 'bg-gap')} / {claim(gap('backswap_gt'), 'bg-gap')} | [BG-gap](#bg-gap) |"]
    return lines, claims


def render_results() -> str:
    head, _ = headline()
    secs = sections()
    toc = " · ".join(f"[{name}](#{anchor})" for name, anchor, _ in secs)
    out = ["# Benchmark results", "",
           "Written by `python -m benchmarks.report` from the JSON in `benchmarks/results/` (`--check` verifies it); "
           "each section names the script and command that measured it. Superseded sections: "
           "[`ARCHIVE.md`](ARCHIVE.md).", "", *head, "", f"Sections: {toc}", ""]
    for name, anchor, md in secs:
        out += [f'<a id="{anchor}"></a>', f"<!-- begin: {name} -->", md.strip(), f"<!-- end: {name} -->", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------------------
# README and model cards
# ------------------------------------------------------------------------------------------------------------

def readme_block() -> str:
    rob = {s: load(f) for s, f in ROBUSTNESS.items()}
    d = json.loads(DECISION.read_text())
    head = "| test backgrounds | " + " | ".join(label for _, label in MAIN_ROWS) + " |"
    rows = [head, "|---|" + "---|" * len(MAIN_ROWS)]
    for s in ("crop", "photo"):
        cells = [fmt([v for _, v in sorted(worst_group_by_seed(rob[s], m).items())]) +
                 f" ({len(worst_group_by_seed(rob[s], m))})" for m, _ in MAIN_ROWS]
        rows.append(f"| {SETTING_NAMES[s]}{'¹' if s == 'crop' else ''} | " + " | ".join(cells) + " |")
    mq = {s: load(n) for s, n in (("crop", "mask_quality_crop.json"), ("photo", "mask_quality.json"))}
    iou = {s: fmt([r["flip+edge"]["tight_iou"] for r in m["runs"].values()]) for s, m in mq.items()}
    bank = {r["route"]: r["images_per_s"] for r in load("bank_build.json")["rows"] if r.get("route")}
    c, p = d["settings"]["crop"], d["settings"]["photo"]
    return "\n".join([
        "Worst-group accuracy on StampBirds v2 (64 px, train correlation 1.0, `small_cnn` from scratch; mean ± 95 % "
        "t-interval over seeds, seeds in brackets). All figures, with their commands: "
        "[`benchmarks/RESULTS.md`](benchmarks/RESULTS.md).", "", *rows, "",
        f"- Edge route − paper's cut-out, paired by seed ({d['seed_count']} seeds): {c['paired_diff_mean']:.3f} ± "
        f"{c['paired_diff_ci']:.3f} on crops, {p['paired_diff_mean']:.3f} ± {p['paired_diff_ci']:.3f} on held-out "
        f"photos. Decision rule and outcome: {d['outcome']}",
        "- ¹ The crop setting's test backgrounds are crops of photos the bundled segmenter and edge refiner were "
        "trained on; the held-out-photo setting has no such overlap.",
        f"- Edge cut-out tight-mask IoU {iou['crop']} (crops) / {iou['photo']} (held-out photos); building its bank "
        f"runs at {bank['edge']:.1f} images/s against the paper route's {bank['paper']:.1f} (224², one CPU thread).",
    ])


def card_block(name: str) -> str:
    rob = {s: load(f) for s, f in ROBUSTNESS.items()}
    mq = {s: load(n) for s, n in (("crop", "mask_quality_crop.json"), ("photo", "mask_quality.json"))}
    if name == "patchseg-tiny-s16":
        rows = ["| StampBirds v2 test, 64 px (unseen birds) | patch balanced accuracy | tight-mask IoU (p > 0.67) |",
                "|---|---|---|"]
        for s in ("photo", "crop"):
            q = [r["segmenter"] for k, r in sorted(rob[s].items()) if k.startswith("backswap/") and "segmenter" in r]
            n_test = next(iter(rob[s].values()))["config"]["n_test"]
            rows.append(f"| {SETTING_NAMES[s]}, zero-shot (n={n_test}) | {q[0]['zero_shot_test']['patch_balanced_accuracy']:.3f} | "
                        f"{q[0]['zero_shot_test']['tight_mask_iou']:.3f} |")
            rows.append(f"| {SETTING_NAMES[s]}, fine-tuned on 300 patch labels ({len(q)} seeds) | "
                        f"{fmt([x['finetuned_test']['patch_balanced_accuracy'] for x in q])} | "
                        f"{fmt([x['finetuned_test']['tight_mask_iou'] for x in q])} |")
        note = ("From `benchmarks/results/robustness_64px_corr1.0_<setting>_v2.json` (StampBirds pack v2); the crop "
                "setting's test backgrounds are crops of photos this model was trained on.")
    else:
        rows = ["| StampBirds v2 test, 64 px, segmenter fine-tuned on 300 patch labels (3 seeds) | tight-mask IoU | boundary F (1 px) |",
                "|---|---|---|"]
        for s in ("photo", "crop"):
            for variant, label in (("baseline", "bilinear, p > 0.67"), ("flip+edge", "flip-averaged + **edge refiner**, p > 0.5")):
                runs = mq[s]["runs"].values()
                rows.append(f"| {SETTING_NAMES[s]}: {label} | {fmt([r[variant]['tight_iou'] for r in runs])} | "
                            f"{fmt([r[variant]['boundary_f'] for r in runs])} |")
        note = ("From `benchmarks/results/mask_quality.json` and `mask_quality_crop.json`; the crop setting's test "
                "backgrounds are crops of photos this model was trained on.")
    return "\n".join([*rows, "", note])


MARKERS = {"readme": ("<!-- results-table -->", "<!-- /results-table -->"),
           "card": ("<!-- stampbirds-figures -->", "<!-- /stampbirds-figures -->")}


def replace_between(text: str, markers: tuple[str, str], block: str) -> str:
    begin, end = markers
    if begin not in text or end not in text:
        raise ValueError(f"markers {markers} not found")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}\n{end}{tail}"


def rendered_files() -> dict[Path, str]:
    """Every file this module renders: {path: the text it should have}."""
    out = {RESULTS_MD: render_results(), README: replace_between(README.read_text(), MARKERS["readme"], readme_block())}
    for name, path in CARDS.items():
        out[path] = replace_between(path.read_text(), MARKERS["card"], card_block(name))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a committed file differs from what is rendered")
    p.add_argument("--decide", action="store_true", help="rewrite results/default_route_decision.json first")
    args = p.parse_args(argv)
    if args.decide:
        DECISION.write_text(json.dumps(decide(), indent=1) + "\n")
    stale = []
    if args.check and json.loads(DECISION.read_text()) != json.loads(json.dumps(decide())):
        stale.append(DECISION)
    for path, text in rendered_files().items():
        if path.read_text() != text:
            if args.check:
                stale.append(path)
            else:
                path.write_text(text)
                print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (run python -m benchmarks.report" + (" --decide" if DECISION in stale else "") + "): "
              + ", ".join(str(s.relative_to(ROOT)) for s in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
