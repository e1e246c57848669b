"""Pages that set recordings side by side: one op across the GPUs it was recorded on (`<op>.gpus.html`:
does the winning layout change?) and one op against a baseline results set (`<page>.diff.html`: Δ % per
variant, with the gate's verdict where both runs kept their repeats)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from markupsafe import Markup

from pipeline import compare, display as fmt, recommend, results, shapeanalysis
from pipeline.viewmodel import (CompareCell, ComparePage, CompareShape, DiffPage, DiffRow, DiffShape, Link)


def compare_name(op: str) -> str:
    return f"{results.slug(op)}.gpus.html"


def compare_page(op: str, entries: list[tuple[dict[str, Any], str]], replayed: bool) -> ComparePage:
    """Does the winning layout change between GPUs? `entries`: (results doc, its page's file name) per GPU."""
    gpus = [str(d["environment"].get("gpu_name", "?")) for d, _ in entries]
    ids = list(dict.fromkeys(s["id"] for d, _ in entries for s in d["shapes"]))
    shapes, changed_ids = [], []
    for sid in ids:
        cells, winners, recs, analysed = [], {}, {}, []
        for (doc, page), gpu in zip(entries, gpus):
            shape = next((s for s in doc["shapes"] if s["id"] == sid), None)
            sa = shapeanalysis.analyze_shape(shape, doc["environment"]) if shape else None
            rec = sa.recommendation if sa else None
            analysed += [sa] if sa else []
            href = f"{page}#shape-{results.slug(sid)}"
            if rec is None:
                cells.append(CompareCell(gpu, Markup("not recorded" if shape is None else "no correct variant"),
                                         "—", "—", "—", "—", "", href if shape else ""))
                continue
            lead_, best = sa.lead, sa.of(rec.variant)
            mem, comp = best.memory_fraction, best.compute_fraction
            lead_txt = (f"{fmt.rate(fmt.tflops(shape, rec.median_ms), 'TFLOP/s')}, {fmt.frac(comp)} of compute roofline"
                        if lead_ == "compute" else
                        f"{fmt.rate(fmt.gbs(shape, rec.median_ms), 'GB/s')}, {fmt.frac(mem)} of memory roofline")
            fam = rec.variant.get("stem", rec.variant["name"])
            winners[gpu], recs[gpu] = fam, sa
            cells.append(CompareCell(gpu, fmt.breakable(rec.variant["name"]), fam, fmt.ms(rec.median_ms), lead_txt,
                                     fmt.ratio(rec.speedup_vs_reference),
                                     f"tied with {len(rec.ties)}" if rec.ties else "", href))
        fams = list(dict.fromkeys(f for sa in analysed for f in sa.family_best))
        table = []
        for f in fams:
            row: list[str] = []
            for gpu in gpus:
                if gpu not in recs:
                    row.append("—")
                    continue
                sa = recs[gpu]
                rec = sa.recommendation
                b = sa.family_best.get(f)
                row.append("—" if b is None else "recommended" if sa.is_recommended(b) else fmt.standing(
                    b["timing"]["median_ms"] / rec.median_ms, False, b["name"] in rec.ties, True))
            table.append((f, row))
        distinct = list(dict.fromkeys(winners.values()))
        if len(winners) < 2:
            verdict, changed = "recorded on one GPU only: nothing to compare", False
        elif len(distinct) == 1:
            same_variant = len({recs[g].recommendation.variant["name"] for g in recs}) == 1
            verdict, changed = (f"same layout family on every GPU: {distinct[0]}"
                                + (" (the same variant)" if same_variant else " (different configs)")), False
        else:
            # a family that wins on one GPU and ties the winner on every other is a change within noise
            within = all(sa.ties_winner(sa.family_best.get(f)) for f in distinct for sa in recs.values())
            verdict = "the winning layout changes: " + ", ".join(f"{g}: {f}" for g, f in winners.items()) + (
                " (within noise: each GPU's winning family ties the winner on the others)" if within else "")
            changed = True
            changed_ids.append(sid)
        shapes.append(CompareShape(sid, verdict, changed, cells, gpus, table))
    both = sum(1 for s in shapes if sum(c.family != "—" for c in s.cells) >= 2)
    summary = (f"{len(changed_ids)} of the {both} shapes recorded on more than one GPU change their winning layout "
               f"family between GPUs" + (f": {', '.join(changed_ids)}." if changed_ids else "."))
    return ComparePage(op=op, filename=compare_name(op),
                       replay_note=" ".join(dict.fromkeys(fmt.replay_note(d) for d, _ in entries)) if replayed else "",
                       gpus=[Link(page, gpu, f"results written {d.get('created', '—')}")
                             for (d, page), gpu in zip(entries, gpus)],
                       summary=summary, shapes=shapes)


# ---------------------------------------------------------------- against a baseline results set

def diff_name(page: str) -> str:
    return page.removesuffix(".html") + ".diff.html"


def baseline_docs(where: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The results files of a baseline: one file, or every <gpu>/<op>/results.json under a folder."""
    return [(f.resolve(), results.load(f)) for f in results.files_at(where)]


def baseline_for(doc: dict[str, Any], base: list[tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]] | None:
    """The baseline of the same op measured on the same GPU model (results.same_op_and_gpu), with its path."""
    found = results.same_op_and_gpu(doc, [b for _, b in base])
    return next(((p, b) for p, b in base if b is found), None)


def diff_page(doc: dict[str, Any], path: Path, base_path: Path, base: dict[str, Any], replayed: bool,
              filename: str) -> DiffPage:
    env = doc["environment"]
    shapes = []
    for shape in doc["shapes"]:
        old = next((s for s in base["shapes"] if s["id"] == shape["id"]), None)
        sa = shapeanalysis.analyze_shape(shape, env)
        rec = sa.recommendation
        old_rec = shapeanalysis.analyze_shape(old, base["environment"]).recommendation if old else None
        now = rec.variant["name"] if rec else "nothing (no correct variant)"
        then = old_rec.variant["name"] if old_rec else "nothing" if old else "—"
        recommendation = (f"recommended: {now}" + ("" if old is None else " (unchanged)" if then == now
                                                   else f", was {then}"))
        rows = []
        names = list(dict.fromkeys([v["name"] for v in shape["variants"]]
                                   + [v["name"] for v in (old or {}).get("variants", [])]))
        for name in names:
            v = next((x for x in shape["variants"] if x["name"] == name), None)
            ov = next((x for x in (old or {}).get("variants", []) if x["name"] == name), None)
            cur_t = v.get("timing") if v and v["status"] == "ok" else None
            old_t = ov.get("timing") if ov and ov["status"] == "ok" else None
            status = (v["status"] if v else "removed") + (
                "" if ov is None and v is None else " (new)" if ov is None else
                "" if v and ov["status"] == v["status"] else f" (was {ov['status']})")
            delta, verdict, css = "—", "no timing on both sides", ""
            if cur_t and old_t:
                change = cur_t["median_ms"] / old_t["median_ms"] - 1
                delta = f"{change * 100:+.1f} %"
                kind = sa.of(v).bound.kind
                sh = compare.compare_timings(old, old_t, shape, cur_t, kind)
                if sh is not None:
                    verdict, word = sh.text(), sh.verdict
                else:
                    word = ("same" if recommend.tied(old_t, cur_t) else "slower" if change > 0 else "faster")
                    verdict = ("median Δ only (no stored repeats): " + (
                        f"within noise (p25–p75 overlapping or medians within {recommend.TIE_MARGIN:.0%})"
                        if word == "same" else f"{word}, outside the noise"))
                css = "bad" if word == "slower" else "good" if word == "faster" else ""
            elif v and ov and (v["status"] == "ok") != (ov["status"] == "ok"):
                css = "bad" if ov["status"] == "ok" else "good"
            rows.append(DiffRow(fmt.breakable(name), fmt.ms(old_t and old_t["median_ms"]),
                                fmt.ms(cur_t and cur_t["median_ms"]), delta, verdict, status, css))
        shapes.append(DiffShape(shape["id"], recommendation, rows,
                                "not in the baseline (a new shape)" if old is None else ""))
    return DiffPage(op=doc["op"], gpu=str(env.get("gpu_name", "?")), filename=filename,
                    replay_note=fmt.replay_note(doc) if replayed else "", current_name="/".join(path.parts[-4:]),
                    baseline_name="/".join(base_path.parts[-4:]),
                    page_href=filename.removesuffix(".diff.html") + ".html", shapes=shapes,
                    method=("Δ is the current median over the baseline median, less one. Where both runs stored "
                            "their repeats, the verdict is the gate's (pipeline/compare.py): a control-normalised "
                            "Hodges–Lehmann shift with a bootstrap interval; otherwise only the medians are "
                            f"compared, and a change within noise (p25–p75 overlapping or medians within "
                            f"{recommend.TIE_MARGIN:.0%}) is called the same."))
