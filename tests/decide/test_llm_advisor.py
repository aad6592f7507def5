"""`--advisor llm` against a real OpenAI-protocol server on 127.0.0.1 (scripted answers): what is
applied, what is refused and why, what runs instead, and how the note and labbook show it."""

from __future__ import annotations

import json
import time

import pytest
from ledgers import ent_coef_ledger, seeds_ledger
from openai_server import dead_base_url, openai_server  # noqa: F401 (fixture)

from autopilot.config.load import config_space
from autopilot.decide.advisors import llm
from autopilot.decide.analysis import analyse_and_propose
from autopilot.decide.guard import guard
from autopilot.decide.records import Proposal


@pytest.fixture
def llm_env(monkeypatch, openai_server):  # noqa: F811
    """The three environment variables pointed at the test server; a fresh per-session meter."""
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("AUTOPILOT_LLM_MODEL", "test-model")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    meter = llm.UsageMeter()
    monkeypatch.setattr(llm, "SESSION_USAGE", meter)
    return openai_server, meter


def answer(**fields) -> dict:
    return {"content": json.dumps(fields)}


def quick(history, **advisor_settings):
    """Short timeouts and retries on the latest run's config (the one the advisor reads)."""
    settings = {"timeout_s": 2.0, "llm_max_retries": 0, **advisor_settings}
    for k, v in settings.items():
        setattr(history[-1].config.autopilot.advisor, k, v)
    return history


GOOD = answer(changes={"train.ent_coef": 0.01}, resume_mode="continue", resume_from="best",
              headline="return to the best ent_coef",
              rationale=["success_rate reached 0.973 at ent_coef 0.01, so go back"],
              expected_effect="success_rate back above 0.9")


def test_good_proposal_is_applied_and_its_theory_quoted(llm_env):
    server, meter = llm_env
    server.script(GOOD)
    d = analyse_and_propose(quick(ent_coef_ledger()), advisor="llm")
    assert d.advisor_used == "llm" and not d.rejected
    assert d.proposal.changes["train.ent_coef"] == 0.01 and d.proposal.resume_from == "best"
    assert d.verdict.config.train.ent_coef == 0.01
    # the model's words are quoted as its theory; the 0.973 it claims appears only inside that quote
    quoted = "model test-model's theory (quoted, not checked): “success_rate reached 0.973 at ent_coef 0.01, so go back”"
    assert quoted in d.notes_md
    assert d.notes_md.count("0.973") == 1
    assert "success_rate (objective): 0 (prev 0.12" in d.notes_md  # the ledger's numbers
    # the request: the digest as the user message, JSON output asked for, usage charged to the session
    req = server.requests[0]
    assert req["model"] == "test-model" and req["response_format"] == {"type": "json_object"}
    assert req["messages"][1]["content"].startswith("# autopilot digest")
    prompt = sum(len(m["content"]) for m in req["messages"]) // 4
    assert meter.tokens == prompt + len(GOOD["content"]) // 4 and meter.calls == 1


@pytest.mark.parametrize("content, reason", [
    ("I think ent_coef should go down a lot.", "the answer is not JSON"),
    ('{"changes": {"train.ent_coef": 0.01}, "resume_mode": "sideways"}', "does not fit the Proposal schema"),
    ('["train.ent_coef", 0.01]', "not an object"),
])
def test_malformed_answer_falls_back_to_rules_with_the_reason(llm_env, content, reason):
    server, _ = llm_env
    server.script({"content": content})
    d = analyse_and_propose(quick(ent_coef_ledger()), advisor="llm")
    assert d.advisor_used == "rules" and d.proposal is not None
    (name, verdict), = d.rejected
    assert name == "llm" and reason in verdict.reasons[0]
    assert "## Refused proposals" in d.notes_md and "- llm: no proposal; advisor llm failed: " in d.notes_md
    assert "- ran instead: rules: train." in d.notes_md
    assert "- Refused: llm (advisor llm failed:" in d.labbook_md and "ran rules instead" in d.labbook_md


def test_out_of_range_values_are_refused_not_clamped(llm_env):
    server, _ = llm_env
    server.script(answer(changes={"train.ent_coef": 7.0, "train.update_epochs": 0}, headline="more entropy",
                         rationale=["explore"]))
    d = analyse_and_propose(quick(ent_coef_ledger()), advisor="llm")
    assert d.advisor_used == "rules"
    reasons = d.rejected[0][1].reasons
    assert any("train.ent_coef=7 is outside its range 0 or [0.0001, 0.5]" in r for r in reasons)
    assert any("train.update_epochs=0 is outside its range [1, 32]" in r for r in reasons)
    # the note shows what the model proposed (as given), why it was refused, and what ran instead
    assert "- llm proposed: train.ent_coef: 0.06 -> 7; train.update_epochs: 12 -> 0" in d.notes_md
    assert "  - refused: train.ent_coef=7 is outside its range" in d.notes_md
    assert d.proposal.changes.get("train.ent_coef") != 7.0


@pytest.mark.parametrize("changes, resume_from, reason", [
    ({"autopilot.trainer_command": ["sh", "-c", "echo pwned"]}, "latest", "autopilot.trainer_command="),
    ({"autopilot.advisor.llm_base_url": "http://evil.example/v1"}, "latest", "autopilot.advisor.llm_base_url="),
    ({"vec.num_workers": 4}, "latest", "vec.num_workers=4 is not tunable"),
    ({"train.entropy_coef": 0.01}, "latest", "train.entropy_coef is not a known key"),
    ({"train.ent_coef": 0.05}, "/etc", "resume_from='/etc' names a path"),
])
def test_keys_outside_the_whitelist_and_paths_are_refused(llm_env, changes, resume_from, reason):
    server, _ = llm_env
    server.script(answer(changes=changes, resume_from=resume_from, headline="try this", rationale=["trust me"]))
    d = analyse_and_propose(quick(ent_coef_ledger()), advisor="llm")
    assert d.advisor_used == "rules"
    assert any(reason in r for r in d.rejected[0][1].reasons), d.rejected[0][1].reasons
    assert "trainer_command" not in json.dumps(d.proposal.as_override())
    assert d.verdict.config.autopilot.trainer_command is None
    assert d.verdict.config.autopilot.advisor.llm_base_url is None


def test_the_guard_alone_refuses_trainer_command_and_non_whitelisted_keys():
    hist = ent_coef_ledger()
    base = hist[-1].config
    for changes in ({"autopilot.trainer_command": ["sh"]}, {"autopilot.advisor.command": ["sh"]},
                    {"vec.num_workers": 4}, {"policy.hidden_size": 128}):
        v = guard(Proposal(advisor="llm", changes=changes), base=base, history=hist, space=config_space(base))
        assert not v.accepted and "is not tunable" in v.reasons[0], (changes, v.reasons)


def test_slow_endpoint_times_out_and_falls_back(llm_env):
    server, _ = llm_env
    server.script({"sleep": 3.0, **GOOD})
    t0 = time.monotonic()
    d = analyse_and_propose(quick(ent_coef_ledger(), timeout_s=0.4), advisor="llm")
    assert time.monotonic() - t0 < 2.5
    assert d.advisor_used == "rules"
    assert "did not answer within 0.4s" in d.rejected[0][1].reasons[0]
    assert "did not answer within 0.4s" in d.notes_md


def test_dead_endpoint_retries_with_backoff_then_falls_back(llm_env, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", dead_base_url())
    d = analyse_and_propose(quick(seeds_ledger(), llm_max_retries=2), advisor="llm")
    assert d.advisor_used == "rules" and d.proposal is not None
    reason = d.rejected[0][1].reasons[0]
    assert "cannot reach http://127.0.0.1:" in reason and "2 retries with backoff" in reason
    assert "- Refused: llm (advisor llm failed: cannot reach" in d.labbook_md


def test_server_error_status_is_a_reason(llm_env):
    server, _ = llm_env
    server.script({"status": 401, "error": "bad key"})
    d = analyse_and_propose(quick(ent_coef_ledger()), advisor="llm")
    reason = d.rejected[0][1].reasons[0]
    assert d.advisor_used == "rules" and "answered HTTP 401" in reason and "bad key" in reason


def test_token_budget_is_per_session_and_stops_asking(llm_env):
    server, meter = llm_env
    server.script(GOOD, GOOD)
    hist = quick(ent_coef_ledger(), llm_token_budget=10)
    assert analyse_and_propose(hist, advisor="llm").advisor_used == "llm"
    spent = meter.tokens
    assert spent > 10
    d = analyse_and_propose(hist, advisor="llm")
    assert len(server.requests) == 1  # not asked again
    assert d.advisor_used == "rules" and "token budget is spent" in d.rejected[0][1].reasons[0]
    assert f"{spent:,} token(s) over 1 call(s)" in d.rejected[0][1].reasons[0]


def test_server_without_json_mode_is_asked_again_plainly_and_missing_usage_is_estimated(llm_env):
    server, meter = llm_env
    server.script({"status": 400, "error": "response_format json_object is not supported"},
                  {**GOOD, "usage": False})
    d = analyse_and_propose(quick(ent_coef_ledger()), advisor="llm")
    assert d.advisor_used == "llm"
    assert "response_format" in server.requests[0] and "response_format" not in server.requests[1]
    assert meter.estimated_calls == 1 and meter.tokens > 0


def test_optional_parameters_a_server_refuses_are_dropped_one_by_one(llm_env):
    server, _ = llm_env
    server.script({"status": 400, "error": "Unsupported parameter: 'max_tokens'; use max_completion_tokens"},
                  {"status": 400, "error": "temperature does not support 0.2 with this model"}, GOOD)
    d = analyse_and_propose(quick(ent_coef_ledger()), advisor="llm")
    assert d.advisor_used == "llm" and len(server.requests) == 3
    assert "max_tokens" in server.requests[0] and "max_tokens" not in server.requests[1]
    assert "temperature" in server.requests[1] and "temperature" not in server.requests[2]
    assert server.requests[2]["response_format"] == {"type": "json_object"}


def test_a_bad_request_naming_nothing_optional_is_a_reason(llm_env):
    server, _ = llm_env
    server.script({"status": 400, "error": "model 'test-model' does not exist"})
    d = analyse_and_propose(quick(ent_coef_ledger()), advisor="llm")
    assert len(server.requests) == 1 and "answered HTTP 400" in d.rejected[0][1].reasons[0]


def test_json_schema_mode_sends_the_proposal_schema_and_fenced_answers_parse(llm_env):
    server, _ = llm_env
    server.script({"content": "```json\n" + GOOD["content"] + "\n```"})
    d = analyse_and_propose(quick(ent_coef_ledger(), llm_response_format="json_schema"), advisor="llm")
    assert d.advisor_used == "llm"
    schema = server.requests[0]["response_format"]["json_schema"]["schema"]
    assert "advisor" not in schema["properties"] and schema["properties"]["resume_from"]["enum"] == ["latest", "best"]


def test_a_trust_region_override_from_the_model_is_dropped(llm_env):
    server, _ = llm_env
    server.script(answer(changes={"train.learning_rate": 0.05}, trust_region_override="I am sure",
                         headline="much faster", rationale=["go"]))
    d = analyse_and_propose(quick(ent_coef_ledger()), advisor="llm")
    assert d.advisor_used == "rules"
    assert any("beyond the trust region" in r for r in d.rejected[0][1].reasons)
    assert "was dropped: an outside advisor moves each knob within the trust region" in d.notes_md


def test_missing_model_is_a_clear_reason(llm_env, monkeypatch):
    monkeypatch.delenv("AUTOPILOT_LLM_MODEL")
    d = analyse_and_propose(quick(ent_coef_ledger()), advisor="llm")
    assert d.advisor_used == "rules" and "set $AUTOPILOT_LLM_MODEL" in d.rejected[0][1].reasons[0]
