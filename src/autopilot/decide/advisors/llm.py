"""`--advisor llm`: any OpenAI-compatible chat-completions endpoint (a hosted API, or a local llama.cpp,
vLLM or Ollama server) reads the digest and answers with a Proposal JSON.

Where it connects (the config key wins when set, else the environment variable):

    autopilot.advisor.llm_base_url   $OPENAI_BASE_URL     e.g. http://127.0.0.1:8080/v1
    autopilot.advisor.llm_model      $AUTOPILOT_LLM_MODEL
    (API key)                        $OPENAI_API_KEY      never in a config; "unused" for a local server

The call uses the official `openai` client: a per-request timeout (`autopilot.advisor.timeout_s`), its
retries with exponential backoff (`llm_max_retries`), and JSON output where the server offers it
(`llm_response_format`: json_object by default; json_schema sends the Proposal schema; a server that
refuses the format, the temperature or max_tokens is asked again without it). Whatever comes back is validated with the Proposal
model, screened and guarded like any proposal. Failures raise `AdvisorError`: the analysis falls back
to the default advisor and the note says why.

Tokens are counted from each response's `usage` and charged to a `UsageMeter`. Advisors are built
afresh for every analysis, so the registered factory shares one meter per process (`SESSION_USAGE`);
the runner loads it from `session.json` when a session starts or resumes and saves it back after each
analysis, so the budget (`llm_token_budget`) spans the session, restarts included. Tests pass their own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from autopilot.config.model import AdvisorSettings
from autopilot.decide.advisors import register_advisor
from autopilot.decide.advisors.external import ExternalAdvisor, parse_answer
from autopilot.decide.digest import answer_schema, render_digest
from autopilot.decide.records import AdvisorContext, Proposal
from autopilot.errors import AdvisorError

ENV_BASE_URL, ENV_API_KEY, ENV_MODEL = "OPENAI_BASE_URL", "OPENAI_API_KEY", "AUTOPILOT_LLM_MODEL"
MAX_COMPLETION_TOKENS = 1500
OPTIONAL_PARAMS = ("response_format", "temperature", "max_tokens")  # dropped if a server refuses them
SYSTEM_PROMPT = (
    "You tune PPO training runs. You read a digest of the run ledger and propose the next config. "
    "Judge scores against the noise band; treat SUSPECT runs as broken measurements, never as progress. "
    "Change few knobs, inside their ranges and this step's trust region; only the listed tunable keys, "
    "train.seed and train.total_timesteps may change. Answer with one JSON object and nothing else.")


@dataclass
class UsageMeter:
    """Tokens and calls charged to one session (thread-safe: the loop may analyse in a worker)."""

    tokens: int = 0
    calls: int = 0
    estimated_calls: int = 0  # responses without `usage`, charged by characters / 4
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def charge(self, tokens: int, *, estimated: bool = False) -> None:
        with self._lock:
            self.tokens += max(0, int(tokens))
            self.calls += 1
            self.estimated_calls += int(estimated)

    def text(self) -> str:
        est = f", {self.estimated_calls} estimated" if self.estimated_calls else ""
        return f"{self.tokens:,} token(s) over {self.calls} call(s){est}"


SESSION_USAGE = UsageMeter()


@dataclass(frozen=True)
class LLMSettings:
    base_url: str | None
    model: str
    api_key: str
    timeout_s: float
    max_retries: int
    token_budget: int
    response_format: str

    @classmethod
    def resolve(cls, cfg: AdvisorSettings, environ: Mapping[str, str]) -> LLMSettings:
        base_url = cfg.llm_base_url or environ.get(ENV_BASE_URL) or None
        model = cfg.llm_model or environ.get(ENV_MODEL)
        if not model:
            raise AdvisorError(f"no model named: set ${ENV_MODEL} or autopilot.advisor.llm_model "
                               f"(e.g. --llm-model qwen2.5-7b-instruct)")
        key = environ.get(ENV_API_KEY)
        if not key:
            if base_url is None:
                raise AdvisorError(f"neither ${ENV_API_KEY} nor a base URL is set: set ${ENV_BASE_URL} to a local "
                                   f"server (e.g. http://127.0.0.1:8080/v1) or ${ENV_API_KEY} for a hosted one")
            key = "unused"  # local servers accept any key; the client insists on one
        return cls(base_url=base_url, model=model, api_key=key, timeout_s=cfg.timeout_s,
                   max_retries=cfg.llm_max_retries, token_budget=cfg.llm_token_budget,
                   response_format=cfg.llm_response_format)


def _response_format(kind: str) -> dict | None:
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "proposal", "schema": answer_schema()}}
    return None


@register_advisor("llm")
class LLMAdvisor(ExternalAdvisor):
    def __init__(self, meter: UsageMeter | None = None, environ: Mapping[str, str] | None = None):
        self.meter = meter if meter is not None else SESSION_USAGE
        self.environ = environ

    def propose(self, ctx: AdvisorContext) -> Proposal:
        s = LLMSettings.resolve(ctx.base_config.autopilot.advisor, self.environ if self.environ is not None
                                else os.environ)
        if s.token_budget and self.meter.tokens >= s.token_budget:
            raise AdvisorError(f"the session's token budget is spent ({self.meter.text()} ≥ "
                               f"autopilot.advisor.llm_token_budget={s.token_budget:,}); raise it to ask again")
        digest = render_digest(ctx)
        text = self._complete(s, digest)
        return parse_answer(text, advisor=self.name or "llm", source=f"model {s.model}")

    def _complete(self, s: LLMSettings, digest: str) -> str:
        try:
            import openai
        except ImportError:
            raise AdvisorError("the llm advisor needs the openai package: pip install 'autopilot[llm]'") from None
        where = s.base_url or "the OpenAI API"
        client = openai.OpenAI(base_url=s.base_url, api_key=s.api_key, timeout=s.timeout_s,
                               max_retries=s.max_retries)
        kwargs: dict = {"model": s.model, "temperature": 0.2, "max_tokens": MAX_COMPLETION_TOKENS,
                        "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                     {"role": "user", "content": digest}]}
        fmt = _response_format(s.response_format)
        if fmt is not None:
            kwargs["response_format"] = fmt
        try:
            resp = None
            while resp is None:
                try:
                    resp = client.chat.completions.create(**kwargs)
                except openai.BadRequestError as exc:
                    # A server that does not offer an optional parameter (JSON mode, temperature, max_tokens)
                    # is asked again without it; the answer is validated the same way.
                    named = [p for p in OPTIONAL_PARAMS if p in kwargs and p in str(exc)]
                    if not named:
                        raise
                    kwargs.pop(named[0])
        except openai.APITimeoutError:
            raise AdvisorError(f"{where} did not answer within {s.timeout_s:g}s "
                               f"({s.max_retries} retr{'y' if s.max_retries == 1 else 'ies'} with backoff)") from None
        except openai.APIConnectionError as exc:
            raise AdvisorError(f"cannot reach {where} ({exc.__cause__ or exc}; {s.max_retries} retries with "
                               f"backoff); check ${ENV_BASE_URL}") from None
        except openai.APIStatusError as exc:
            raise AdvisorError(f"{where} answered HTTP {exc.status_code}: {str(exc.message)[:200]}") from None
        finally:
            client.close()
        usage = getattr(resp, "usage", None)
        total = getattr(usage, "total_tokens", None) if usage is not None else None
        choices = getattr(resp, "choices", None) or []
        content = choices[0].message.content if choices and choices[0].message is not None else None
        if isinstance(total, int):
            self.meter.charge(total)
        else:
            self.meter.charge((len(SYSTEM_PROMPT) + len(digest) + len(content or "")) // 4, estimated=True)
        if not content:
            raise AdvisorError(f"{where} returned no message content (model {s.model})")
        return content


__all__ = ["LLMAdvisor", "LLMSettings", "SESSION_USAGE", "UsageMeter"]
