"""Reading a text with a model and capturing the routing of every token: one forward pass (analyze_text),
or generate() in a worker thread that streams each new token while the routing is traced step by step
(generate_routing).

Routing data: `Routing.weights` is (modules, routed tokens, E), one row per routed module (TalkLoRA /
MoELoRA), each token's weights summing to 1; a TT-LoRA MoE instead has `sequence_probs` (E,), its
router's probabilities for the whole sequence.
"""

from __future__ import annotations

import os
import queue
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from transformers.generation.streamers import BaseStreamer

from ..analysis.module_names import layer_index_of
from .errors import SpaceError
from .models import LoadedModel


@dataclass
class Routing:
    """Which expert every token went to, for one text and one model.

    tokens: display text of each token (decoded so that they concatenate to the text);
    weights: (modules, routed tokens, E) float32, or None (no token routing); routed tokens may lag
    behind tokens while generating (a generated token is routed when the model reads it);
    module_names / layers: per module; prompt_length: tokens of the prompt (all, for a plain text);
    sequence_probs: TT-LoRA MoE router probabilities (E,) for the sequence, else None;
    notes: messages for the user (truncation, no routing, ...); done: False while still generating.
    """

    model_id: str
    method: Optional[str]
    num_experts: int
    tokens: List[str]
    token_ids: List[int]
    special: List[bool]
    weights: Optional[torch.Tensor]
    module_names: List[str]
    prompt_length: int
    sequence_probs: Optional[List[float]] = None
    notes: List[str] = field(default_factory=list)
    done: bool = True
    generated: bool = False

    @property
    def layers(self) -> List[int]:
        return [layer_index_of(n) for n in self.module_names]

    @property
    def routed_tokens(self) -> int:
        return 0 if self.weights is None else int(self.weights.shape[1])

    @property
    def token_routed(self) -> bool:
        return self.weights is not None and len(self.module_names) > 0

    @property
    def chosen_expert(self) -> Optional[int]:
        if self.sequence_probs is None:
            return None
        return max(range(len(self.sequence_probs)), key=self.sequence_probs.__getitem__)


def token_texts(tokenizer: Any, ids: Sequence[int], previous: Optional[Tuple[List[str], str]] = None
                ) -> Tuple[List[str], str]:
    """Each token's text such that the pieces concatenate to the decoded text (prefix decoding, so
    multi-byte characters and word-initial spaces come out right). previous: the result for a prefix of
    ids, to extend it (streaming). Returns (pieces, decoded text)."""
    pieces, text = (list(previous[0]), previous[1]) if previous else ([], "")
    for i in range(len(pieces), len(ids)):
        current = tokenizer.decode(list(ids[:i + 1]), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        common = len(text) if current.startswith(text) else len(os.path.commonprefix([text, current]))
        if common < len(text):  # earlier pieces changed (e.g. a multi-byte character completed): trim them
            start = len(text)
            for j in range(len(pieces) - 1, -1, -1):
                start -= len(pieces[j])
                if start >= common:
                    pieces[j] = ""
                else:
                    pieces[j] = pieces[j][:common - start]
                    break
        pieces.append(current[common:])
        text = current
    return pieces, text


def _special_flags(tokenizer: Any, ids: Sequence[int]) -> List[bool]:
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return [int(i) in special for i in ids]


def _encode(loaded: LoadedModel, text: str, room: int, keep: str) -> Tuple[List[int], List[str]]:
    """Token ids of text, at most `room` of them (keep "start" or "end"), and notes about truncation."""
    ids = loaded.tokenizer(text, add_special_tokens=True)["input_ids"]
    notes = []
    if len(ids) > room:
        where = "first" if keep == "start" else "last"
        notes.append(f"The text has {len(ids)} tokens, more than the {room} this model reads here "
                     f"({loaded.limit_reason}): it was truncated to its {where} {room} tokens.")
        ids = ids[:room] if keep == "start" else ids[-room:]
    return ids, notes


def _check_text(text: Optional[str], what: str) -> str:
    if text is None or not text.strip():
        raise SpaceError(f"The {what} is empty: type or paste some text first.")
    return text


def _model_notes(loaded: LoadedModel) -> List[str]:
    if loaded.method is None:
        return [f"`{loaded.model_id}` is not a talklora_hub adapter model (its config has no `adapter`): "
                "there are no experts and no routing to show, only its tokens."]
    if loaded.sequence_routed:
        return [f"{loaded.label or loaded.method} MoE routes whole sequences, not tokens: the router reads the frozen base model's "
                "state at the last token and one expert serves every token. See *Expert per sequence*."]
    if not loaded.token_routed:
        name = loaded.label or loaded.method
        return [f"`{loaded.model_id}` is a plain {name} adapter: one static update applied to every token, with "
                "no experts and no routing to show. Pick a TalkLoRA, MoELoRA or TT-LoRA MoE model to see routing."]
    return []


def analyze_text(loaded: LoadedModel, text: str) -> Routing:
    """One forward pass over text (truncated to what the model reads, and said so)."""
    _check_text(text, "text")
    ids, notes = _encode(loaded, text, loaded.max_tokens, keep="start")
    if not ids:
        raise SpaceError("The tokenizer produced no tokens for this text.")
    input_ids = torch.tensor([ids])
    extra = {"output_router_logits": True} if loaded.method is not None else {}
    with loaded.lock, torch.no_grad():
        out = loaded.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **extra)
    weights, names = None, []
    if getattr(out, "routing_weights", None):
        weights = torch.stack([w[0].float() for w in out.routing_weights])
        names = list(out.router_module_names)
    pieces, _ = token_texts(loaded.tokenizer, ids)
    return Routing(loaded.model_id, loaded.method, loaded.num_experts, pieces, list(ids),
                   _special_flags(loaded.tokenizer, ids), weights, names, len(ids), _sequence_probs(out),
                   notes=_model_notes(loaded) + notes)


def _sequence_probs(out: Any) -> Optional[List[float]]:
    logits = getattr(out, "sequence_router_logits", None)
    if logits is None:
        return None
    return [float(p) for p in logits[0].float().softmax(-1)]


class QueueStreamer(BaseStreamer):
    """Hands each token generate() produces to the thread rendering the views, through a queue."""

    def __init__(self, sink: "queue.Queue[Any]"):
        self.sink = sink
        self.seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:  # generate() first pushes the prompt
            self.seen_prompt = True
            return
        self.sink.put(("tokens", [int(t) for t in value.reshape(-1).tolist()]))

    def end(self) -> None:
        """Nothing to flush: the worker sends "done" itself once the last token has been read too."""


def _cache_of(out: Any) -> Dict[str, Any]:
    """generate()'s KV cache as the keyword this transformers version uses: `cache` in newer 5.x,
    `past_key_values` before (reading or passing the old name in newer versions warns)."""
    for name in ("cache", "past_key_values"):
        if name in getattr(type(out), "__dataclass_fields__", {}):
            return {name: getattr(out, name)}
    return {}


def _stack_steps(steps: List[list]) -> Optional[Tuple[torch.Tensor, List[str]]]:
    """A snapshot of RoutingTrace.steps -> ((modules, tokens, E), names) for batch row 0."""
    steps = [s for s in steps if s]
    if not steps:
        return None
    names = [r.name for r in steps[0]]
    per_module = [torch.cat([step[m].weights[0].float() for step in steps], dim=0) for m in range(len(names))]
    return torch.stack(per_module), names


def generate_routing(loaded: LoadedModel, prompt: str, max_new_tokens: int = 24) -> Iterator[Routing]:
    """Continues prompt with greedy generate(), yielding the routing after every new token.

    The prompt is kept to its last tokens so that prompt + new tokens fit what the model reads. A new
    token's routing is known once the model reads it (the next step); after the last step one more
    forward reads the last token, so the final Routing covers every token. generate() runs in a worker
    thread (it only hands tokens to a streamer); stopping early (the caller drops the iterator) cancels it.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList

    _check_text(prompt, "prompt")
    max_new_tokens = max(1, min(int(max_new_tokens), loaded.max_tokens - 1))
    ids, notes = _encode(loaded, prompt, loaded.max_tokens - max_new_tokens, keep="end")
    if not ids:
        raise SpaceError("The tokenizer produced no tokens for this prompt.")
    notes = _model_notes(loaded) + notes
    tokenizer, model = loaded.tokenizer, loaded.model
    input_ids = torch.tensor([ids])
    events: "queue.Queue[Any]" = queue.Queue()
    cancel = threading.Event()
    trace_box: Dict[str, Any] = {}

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def work() -> None:
        try:
            with torch.no_grad():
                if loaded.sequence_routed:
                    first = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
                    events.put(("sequence", _sequence_probs(first)))
                with model.trace_routing() if loaded.token_routed else nullcontext() as trace:
                    trace_box["trace"] = trace
                    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                         max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                         streamer=QueueStreamer(events), return_dict_in_generate=True,
                                         stopping_criteria=StoppingCriteriaList([_Cancel()]))
                    sequences = out.sequences
                    if loaded.token_routed and sequences.shape[1] > input_ids.shape[1] and not cancel.is_set():
                        model(input_ids=sequences[:, -1:], attention_mask=torch.ones_like(sequences),
                              use_cache=True, **_cache_of(out))
            events.put(("done", None))
        except BaseException as error:  # handed to the rendering thread, which raises it
            events.put(("error", error))

    all_ids = list(ids)
    pieces = token_texts(tokenizer, all_ids)
    probs: Optional[List[float]] = None
    with loaded.lock:
        worker = threading.Thread(target=work, name="talklora-space-generate", daemon=True)
        worker.start()
        try:
            finished = False
            while not finished:
                kind, payload = events.get()
                if kind == "error":
                    raise payload
                if kind == "sequence":
                    probs = payload
                    continue
                if kind == "tokens":
                    all_ids.extend(payload)
                    pieces = token_texts(tokenizer, all_ids, pieces)
                finished = kind == "done"
                trace = trace_box.get("trace")
                stacked = _stack_steps(list(trace.steps)) if trace is not None else None
                weights, names = stacked if stacked else (None, [])
                yield Routing(loaded.model_id, loaded.method, loaded.num_experts, list(pieces[0]), list(all_ids),
                              _special_flags(tokenizer, all_ids), weights, names, len(ids), probs,
                              notes=list(notes), done=finished, generated=True)
        finally:
            cancel.set()
            worker.join()
