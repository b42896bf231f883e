"""Language model configuration, including the offline LM.

The offline LM is part of the product, not a test double: it lets demos, tests and air-gapped
installs run the whole pipeline deterministically. It is an in-context learner that reads the
prompt DSPy's ChatAdapter renders (field headers ``[[ ## name ## ]]``), answers from the most
similar demonstration in that prompt, and otherwise falls back to a zero-shot rule. Better demos
therefore give measurably better answers, which is what optimization needs to show.

A free-text answer copied from a demo has the demo's input values (a name, a company) replaced by
the query's wherever they appear verbatim, so a demonstrated style transfers to a new input.

Zero-shot rule, per output field:
- a field restricted to options (``Literal``) answers the option named in the input text, else the
  option whose name shares the most characters with the input's words, else the first option;
- ``reasoning`` answers a short sentence saying which rule fired;
- any other text field echoes the first sentence of the first input field.

Answer format. A prompt rendered by DSPy's ``JSONAdapter`` (it asks "Respond with a JSON object")
gets its fields as one JSON object, and its demos' JSON answers are read as demos; every other
prompt gets ``[[ ## field ## ]]`` sections. GEPA's instruction proposer talks to its reflection LM
through the JSONAdapter (``ProposeInstruction``: ``current_instruction``, ``examples_with_feedback``
-> ``new_instruction``), so the offline LM can be GEPA's reflection LM: by the zero-shot rule it
proposes the first sentence of the current instruction, deterministically, and GEPA keeps whichever
candidate scores best. It writes nothing better than what it was given; a real reflection LM does.

``TELEPROMPT_OFFLINE_LATENCY_MS`` makes every offline call wait that long before answering (the
answer is unchanged): a hosted LM spends most of a compile waiting on the network, and that is
what parallel compiles and time limits must be tested against.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

LM_ENV = "TELEPROMPT_LM"
API_BASE_ENV = "TELEPROMPT_LM_API_BASE"
API_KEY_ENV = "TELEPROMPT_LM_API_KEY"
ENGINE_ENV = "TELEPROMPT_LM_ENGINE"
OFFLINE_MODEL = "offline/nearest-demo"
SIMILARITY_THRESHOLD = 0.35

_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_OPTIONS = re.compile(r"\[\[ ## (\w+) ## \]\]\n\{\w+\}\s+# note: the value you produce must exactly match \(no extra characters\) one of: ([^\n]+)")
_JSON_OPTIONS = re.compile(r'"(\w+)": "\{\w+\}\s+# note: the value you produce must exactly match \(no extra characters\) one of: ([^"\n]+)"')
_WORD = re.compile(r"[a-z0-9]+")
_RESPOND = "\n\nRespond with "
_JSON_ASKED = "a JSON object"


def parse_fields(text: str) -> dict[str, str]:
    """Split a ChatAdapter message into its ``[[ ## field ## ]]`` sections."""
    fields: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = match.group(1)
        if name != "completed":
            fields[name] = text[match.end() : end].strip()
    return fields


STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in is it its me my no not of on or our please "
    "so that the their there this to up was we what when where which who why will with you your".split()
)


def tokens(text: str) -> Counter[str]:
    """Content words, lower-cased, with a light plural strip so 'refunds' and 'refund' agree."""
    words = (w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORD.findall(text.lower()) if w not in STOPWORDS)
    return Counter(words)


def cosine(a: Counter[str], b: Counter[str]) -> float:
    if not a or not b:
        return 0.0
    dot = sum(count * b[word] for word, count in a.items())
    return dot / math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))


@dataclass(frozen=True)
class PromptView:
    """What the offline LM understands of a rendered prompt."""

    input_names: list[str]
    output_names: list[str]
    options: dict[str, list[str]]
    demos: list[tuple[dict[str, str], dict[str, str]]]
    query: dict[str, str]
    json_answer: bool = False


def read_prompt(system: str, turns: list[tuple[str, str]]) -> PromptView:
    section = lambda title: re.findall(r"\d+\. `(\w+)`", system.split(title, 1)[1].split("Your ", 1)[0]) if title in system else []  # noqa: E731
    input_names = section("Your input fields are:")
    output_names = section("Your output fields are:")
    found = _OPTIONS.findall(system) + _JSON_OPTIONS.findall(system)
    options = {name: [o.strip() for o in opts.split(";")] for name, opts in found}
    demos = []
    for (role_a, text_a), (role_b, text_b) in zip(turns, turns[1:]):
        if role_a == "user" and role_b == "assistant":
            demos.append((parse_fields(text_a), _json_fields(text_b) or parse_fields(text_b)))
    last = turns[-1][1] if turns and turns[-1][0] == "user" else ""
    body, _, request = last.rpartition(_RESPOND) if _RESPOND in last else (last, "", "")
    query = {k: v for k, v in parse_fields(body).items() if k in input_names}
    return PromptView(input_names, output_names, options, demos, query, request.startswith(_JSON_ASKED))


def _json_fields(text: str) -> dict[str, str]:
    """A demo answer the JSONAdapter rendered (a JSON object), as text per field; {} for anything else."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _input_text(fields: dict[str, str], names: list[str]) -> str:
    return "\n".join(fields.get(name, "") for name in names)


def _zero_shot(view: PromptView, note: str) -> dict[str, str]:
    text = _input_text(view.query, view.input_names)
    words = tokens(text)
    answer: dict[str, str] = {}
    for name in view.output_names:
        if name in view.options:
            answer[name] = _pick_option(view.options[name], words)
        elif name == "reasoning":
            answer[name] = note
        else:
            first = next(iter(view.input_names), "")
            answer[name] = re.split(r"(?<=[.!?])\s", view.query.get(first, "").strip(), maxsplit=1)[0]
    return answer


def _pick_option(options: list[str], words: Counter[str]) -> str:
    named = [o for o in options if tokens(o) and all(w in words for w in tokens(o))]
    if named:
        return named[0]
    prefix = lambda o: max((len(_common_prefix(o.lower(), w)) for w in words), default=0)  # noqa: E731
    best = max(options, key=prefix)
    return best if prefix(best) >= 4 else options[0]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def answer(view: PromptView, threshold: float = SIMILARITY_THRESHOLD) -> dict[str, str]:
    """Answer from the nearest demo above the threshold, else zero-shot. Ties keep the earlier demo."""
    query = tokens(_input_text(view.query, view.input_names))
    best, best_sim = None, -1.0
    for demo_inputs, demo_outputs in view.demos:
        if not all(name in demo_outputs for name in view.output_names if name != "reasoning"):
            continue
        sim = cosine(query, tokens(_input_text(demo_inputs, view.input_names)))
        if sim >= threshold and sim > best_sim:
            best, best_sim = demo_outputs, sim
    if best is None:
        return _zero_shot(view, "No similar demonstration; answered by the zero-shot rule.")
    best_inputs = next(i for i, o in view.demos if o is best)
    out = {name: _substitute(best.get(name, ""), best_inputs, view.query) if name not in view.options else best.get(name, "") for name in view.output_names}
    if "reasoning" in view.output_names:
        out["reasoning"] = f"Followed the most similar demonstration (similarity {best_sim:.2f})."
    return out


def _substitute(text: str, demo_inputs: dict[str, str], query: dict[str, str]) -> str:
    """Copy a demo's free-text answer, swapping in the query's value wherever the demo's input value appears."""
    for name, value in demo_inputs.items():
        value = value.strip()
        if len(value) >= 3 and "\n" not in value and query.get(name):
            text = text.replace(value, query[name].strip())
    return text


def render(fields: dict[str, str]) -> str:
    body = "\n\n".join(f"[[ ## {name} ## ]]\n{value}" for name, value in fields.items())
    return f"{body}\n\n[[ ## completed ## ]]"


def render_json(fields: dict[str, str]) -> str:
    return json.dumps(fields, ensure_ascii=False)


@dataclass
class OfflineEngine:
    """A DSPy engine (``complete(Request) -> Response``) backed by :func:`answer`."""

    threshold: float = SIMILARITY_THRESHOLD
    latency_s: float = 0.0
    calls: int = field(default=0, compare=False)

    def complete(self, request) -> Response:
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        system = request.system if isinstance(request.system, str) or request.system is None else "".join(p.text for p in request.system)
        turns = [(m.role, m.text or "") for m in request.messages]
        view = read_prompt(system or "", turns)
        fields = answer(view, self.threshold)
        text = render_json(fields) if view.json_answer else render(fields)
        self.calls += 1
        prompt_tokens = sum(len(t.split()) for _, t in turns) + len((system or "").split())
        out_tokens = len(text.split())
        return Response(
            id=None,
            model=OFFLINE_MODEL,
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=Usage(input_tokens=prompt_tokens, output_tokens=out_tokens, total_tokens=prompt_tokens + out_tokens),
        )

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass

    def dump_state(self) -> dict:
        return {"threshold": self.threshold}

    @classmethod
    def load_state(cls, state: dict) -> OfflineEngine:
        return cls(threshold=state.get("threshold", SIMILARITY_THRESHOLD))


def offline_lm() -> dspy.LM:
    latency_ms = float(os.environ.get("TELEPROMPT_OFFLINE_LATENCY_MS", "0") or 0)
    if latency_ms < 0:
        raise ValueError(f"TELEPROMPT_OFFLINE_LATENCY_MS must be >= 0, got {latency_ms:g}")
    return dspy.LM(OFFLINE_MODEL, engine=OfflineEngine(latency_s=latency_ms / 1000), cache=False)


def build_lm(model: str | None = None, num_retries: int | None = None, timeout_s: float | None = None) -> dspy.LM:
    """The LM named by ``TELEPROMPT_LM``, or the offline LM when it is unset.

    ``TELEPROMPT_LM`` is a DSPy/LiteLLM model string (``openai/gpt-4o-mini``). A self-hosted,
    OpenAI-compatible server (vLLM, Ollama, a llama.cpp server) is ``openai/<model>`` with
    ``TELEPROMPT_LM_API_BASE`` set to its ``.../v1`` URL, and ``TELEPROMPT_LM_API_KEY`` if it asks
    for one (only that key is sent there; without one, a placeholder); a hosted provider's key is read by DSPy or LiteLLM from its usual variable
    (``OPENAI_API_KEY``), never passed here, so it cannot end up in a pickled program.
    ``TELEPROMPT_LM_ENGINE=litellm`` sends calls through LiteLLM instead of DSPy's native client.
    Each call times out after ``TELEPROMPT_LM_TIMEOUT_S`` (else ``timeout_s``, else 60 s) and is retried
    ``num_retries`` (else ``TELEPROMPT_LM_RETRIES``, default 3) times. The pipeline itself calls
    this with no retries and puts :mod:`.gateway` in front, which owns retries, limits and caching.
    """
    configured = os.environ.get(LM_ENV, "").strip()
    model = model if model is not None else configured
    if not model or model.startswith("offline"):
        return offline_lm()
    timeout = float(os.environ.get("TELEPROMPT_LM_TIMEOUT_S") or timeout_s or 60)
    retries = num_retries if num_retries is not None else int(os.environ.get("TELEPROMPT_LM_RETRIES", "3"))
    client = {}
    base = os.environ.get(API_BASE_ENV, "").strip()
    if base and model == configured:  # the endpoint belongs to TELEPROMPT_LM, not to another model named in a config
        # only this endpoint's own key goes there, never a provider's key from the environment
        client = {"api_base": base, "api_key": os.environ.get(API_KEY_ENV, "").strip() or "unused"}
    engine = os.environ.get(ENGINE_ENV, "").strip() or "auto"
    if engine not in ("auto", "litellm", "lm15"):
        raise ValueError(f"{ENGINE_ENV}={engine!r}: use auto (DSPy's native client where it can), litellm or lm15")
    return dspy.LM(model, cache=False, timeout=timeout, num_retries=retries, engine=engine, **client)


def is_offline(lm: dspy.LM) -> bool:
    return getattr(lm, "model", "") == OFFLINE_MODEL
