import re

from ledgers import SEEDS_TRAINER, ent_coef_ledger, make_record, rid, seeds_ledger

from autopilot.decide.analysis import analyse_and_propose

SECTIONS = ["## Config", "## Key metrics", "## Context vs recent runs", "## Diagnosis / Theory",
            "## Action taken", "## Rationale", "## Checks", "## Next steps", "## Repro notes"]


def render(hist, **kw):
    kw.setdefault("sps", 125_000.0)
    kw.setdefault("repro_command", "autopilot run --runs 5 --mode full --workdir ws")
    return analyse_and_propose(hist, **kw).notes_md


def section(md, title):
    start = md.index(title)
    nxt = md.find("\n## ", start + 1)
    return md[start: nxt if nxt > 0 else None]


def test_sections_in_the_seeds_order_and_title_line():
    md = render(ent_coef_ledger())
    first = md.splitlines()[0]
    assert first.startswith(f"Run {rid(2)} — ")
    assert "ent_coef 0.12→0.06" in first and "success_rate 0 vs best 0.31" in first
    assert "regressed beyond the noise band ±0.031" in first
    positions = [md.index(s) for s in SECTIONS]
    assert positions == sorted(positions)


def test_config_section_has_topology_and_batch_arithmetic():
    cfg = section(render(ent_coef_ledger()), "## Config")
    assert "- Device/topology: cpu; vec 28/56, env 4×8, bptt 16" in cfg
    assert "- Derived batch: 4×8×56×16 = 28,672; minibatch 7,168" in cfg
    assert "ent_coef 0.06 (prev 0.12)" in cfg
    assert "total_timesteps 20,000,000 (prev 10,000,000)" in cfg


def test_key_metrics_against_previous_and_best():
    km = section(render(ent_coef_ledger()), "## Key metrics")
    assert f"- success_rate (objective): 0 (prev 0.12, -0.12; best {rid(0)} 0.31, -0.31)" in km
    assert "- mean_reward: 139.4 (prev 250.6, -111.2; best" in km
    assert "- Throughput: SPS 135,100 (+8.1% vs prev 125,000)" in km
    assert "approx_kl 0.012; clipfrac 0.12; entropy 2" in km
    assert "- Utilisation: CPU 355%; GPU n/a; DRAM 33%; VRAM n/a" in km


def test_context_states_band_runs_and_trends():
    ctx = section(render(ent_coef_ledger()), "## Context vs recent runs")
    assert "- Noise band: ±0.031 (assumed: max(0.02, 10% of |best 0.31|); not yet measured" in ctx
    assert f"- {rid(0)}: completed, success_rate 0.31 [best] — first run" in ctx
    assert f"- {rid(1)}: completed, success_rate 0.12 — train.ent_coef: 0.01 -> 0.12" in ctx
    assert re.search(r"train\.ent_coef: 0\.01 → 0\.31 \([^)]*\), 0\.06 → 0 \([^)]*\), 0\.12 → 0\.12 \([^)]*\); "
                     r"best 0\.01 \(mean 0\.31\)", ctx)


def test_diagnosis_action_rationale_checks_next_repro():
    md = render(ent_coef_ledger())
    diag = section(md, "## Diagnosis / Theory")
    assert "- [warn] regression_vs_best: rule=best 0.31 - 0 = 0.31 > band 0.031" in diag
    assert "Theory: success_rate 0 is 0.31 below the best 0.31" in diag
    act = section(md, "## Action taken")
    assert "- train.ent_coef: 0.06 -> 0.01" in act and "- train.learning_rate: 0.0025 -> 0.002" in act
    assert "- Resume policy: continue from best; save_strategy best" in act
    why = section(md, "## Rationale")
    assert "back to best run" in why and "- Expected effect: success_rate back within the noise band" in why
    checks = section(md, "## Checks")
    assert "- ✓ divisibility: vec.num_envs % vec.num_workers = 56 % 28 = 0" in checks
    assert "- ✓ segments: batch = agents × bptt = 4×8×56×16 = 28,672 (derived)" in checks
    assert "- ✓ trust region:" in checks and "- ✓ resume: continue from best" in checks
    assert "✗" not in checks
    assert "## Next steps (if this stalls)\n- " in md
    repro = section(md, "## Repro notes")
    assert "- Command: autopilot run --runs 5 --mode full --workdir ws" in repro
    assert '"train.ent_coef": 0.01' in repro


def test_suspect_run_note_says_why_and_hides_deltas_against_suspect_runs():
    md = render(seeds_ledger())
    assert "- Suspect, excluded from best, trends and the band: " + rid(2) + ": metrics.success_rate=9.38" in md
    assert "metrics.success_rate=1260 is outside [0, 1]" in md
    assert "prev 9.38, suspect run, no delta" in md
    glitched = render([make_record(rid(0), metrics={"success_rate": 9.38}, trainer=SEEDS_TRAINER)])
    assert glitched.splitlines()[0].endswith("SUSPECT (metrics.success_rate=9.38 is outside [0, 1] (a rate))")
    assert "never promoted to best" in glitched


def test_first_run_note():
    md = render([make_record(rid(0))])
    assert md.splitlines()[0] == f"Run {rid(0)} — success_rate 0.3 (best so far)"
    assert "- Trends: no tunable knob has taken two values across trusted runs yet" in md
    assert "- no finding fired" in md


def test_labbook_section():
    d = analyse_and_propose(ent_coef_ledger(), sps=125_000.0)
    lines = d.labbook_md.splitlines()
    assert lines[0].startswith(f"## Run {rid(2)} — ")
    assert lines[1] == "- Findings: regression_vs_best"
    assert "train.ent_coef: 0.01" in lines[3] and "resume continue from best" in lines[3]
    assert d.labbook_md.endswith("\n\n")
