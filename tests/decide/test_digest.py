"""The digest an outside advisor reads: the ledger's own numbers, compact, and bounded in size."""

from __future__ import annotations

import json

from digest_doc import DOC, context_of, render_doc
from ledgers import ent_coef_ledger, make_record, seeds_ledger

from autopilot.decide.digest import MAX_CHARS, answer_schema, render_digest
from autopilot.decide.sanity import suspect_reasons


def long_ledger(n: int = 50):
    """n runs walking ent_coef and learning_rate, with a glitched run and a crash among them."""
    out = []
    for i in range(n):
        ent = round(0.01 + 0.002 * (i % 25), 4)
        lr = round(0.001 * (1 + i % 4), 4)
        metrics = {"success_rate": round(0.2 + 0.5 * (i % 7) / 7, 3)}
        if i == 17:
            metrics = {"success_rate": 931.0}  # a count read as a rate: suspect
        status = "crashed" if i == 33 else "completed"
        out.append(make_record(f"2025-09-{1 + i // 24:02d}T{i % 24:02d}0000Z",
                               {"train.ent_coef": ent, "train.learning_rate": lr, "train.seed": i + 1},
                               metrics=metrics, status=status))
    return out


def test_digest_of_a_50_run_ledger_stays_under_the_bound():
    ctx = context_of(long_ledger(50))
    text = render_digest(ctx)
    assert len(text) <= MAX_CHARS
    assert "## Ledger (50 run(s)" in text and "run(s) not listed" in text
    assert "1. 2025-09-01T000000Z" in text and "50. 2025-09-03T010000Z" in text and "[LATEST]" in text
    assert "[BEST" in text and f"{ctx.best.run_id}" in text
    # the answer's schema is always complete, even when the ledger is cut
    schema = json.loads(text.rsplit("\n", 2)[-2])
    assert schema == answer_schema()
    # a tighter bound drops more runs, never the schema
    small = render_digest(ctx, max_chars=5000)
    assert len(small) <= 5000 and small.rstrip().endswith("}")


def test_digest_carries_the_seeds_diffuse_policy_story():
    ctx = context_of(seeds_ledger())
    text = render_digest(ctx)
    glitched = ctx.history[1]
    assert f"2. {glitched.run_id} completed success_rate=1260 [SUSPECT: {suspect_reasons(glitched)[0]}" in text
    assert f"4. {ctx.history[-1].run_id} completed success_rate=0 [LATEST] | train.total_timesteps" in text
    # every finding with its measured evidence (the seeds' timid updates and diffuse policy among them)
    assert {"updates_too_small", "entropy_too_high"} <= {f.code for f in ctx.findings}
    for f in ctx.findings:
        assert f"- [{f.severity}] {f.code}: {f.evidence_text()[:60]}" in text
    assert "entropy=32.73" in text and "approx_kl=0.0002" in text
    assert f"Noise band: {ctx.noise.text()}" in text
    assert ("- train.ent_coef: 0 or [0.0001, 0.5] (log scale, 0 = off); now 0.12; step within [0.06, 0.24]; "
            "prior 0.01 [0, 0.02]") in text
    assert "now: batch 4×8×56×16 = 28,672; max_run_seconds 3600 at 125000 SPS" in text


def test_digest_carries_the_ent_coef_trend_whose_best_is_0_01():
    text = render_digest(context_of(ent_coef_ledger()))
    assert "1. 2025-09-20T100000Z completed success_rate=0.31 [BEST] | first run listed" in text
    assert "train.ent_coef: 0.01 → 0.31" in text and "best 0.01 (mean 0.31)" in text
    assert "3. 2025-09-20T120000Z completed success_rate=0 [LATEST] | train.ent_coef: 0.12 -> 0.06" in text


def test_the_docs_page_shows_the_digest_the_code_builds_now():
    assert DOC.read_text("utf-8") == render_doc(), "docs/llm_digest.md is stale: run python tests/support/digest_doc.py"
