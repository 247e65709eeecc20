"""Attention probabilities of chosen blocks, read through each model's own attention processors.

Every diffusers attention module hands its work to a processor (`attn.processor`), and every
processor of the supported families ends in `torch.nn.functional.scaled_dot_product_attention`
(directly, or through diffusers' attention dispatch) on queries and keys that already carry the
model's RoPE, norms and masks. `capture_attention` wraps the processors of the chosen blocks
(`set_processor`; the originals come back in a `finally`) and, while one of them runs, lets the
scaled-dot-product call through unchanged and also computes the softmax probabilities of a
seeded subset of its queries. So the model's outputs are its own bit for bit, and memory stays
bounded at real sizes: `queries` rows of `keys` probabilities per call (heads averaged unless
asked for), never the full `N x N` map.

The toolkit's own attention (Open-Sora's and DynamiCrafter's modules) calls the same function;
its modules have no processor to wrap, so they are entered by a forward pre-hook instead.

Written here: diffusers records no attention probabilities (its processors never form them).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_SDPA = torch.nn.functional.scaled_dot_product_attention  # the original, whatever is patched later
_CURRENT: contextvars.ContextVar[_Recorder | None] = contextvars.ContextVar(
    "anti_i2v_attention", default=None
)


@dataclass
class AttentionCall:
    """One scaled-dot-product call of one attention module.

    Attributes:
        module: the attention module's path in the denoiser (`transformer_blocks.3.attn1`).
        queries: the query indices kept, `(k,)`, sorted, out of `n_queries`.
        probs: their probabilities over every key, `(B, k, n_keys)` (heads averaged) or
            `(B, H, k, n_keys)` with `heads="all"`; float32, rows sum to 1.
        n_queries, n_keys: the call's sequence lengths.
    """

    module: str
    queries: torch.Tensor
    probs: torch.Tensor
    n_queries: int
    n_keys: int


@dataclass
class _Recorder:
    module: str
    queries: int
    seed: int
    heads: str
    sink: list[AttentionCall]
    grad: bool = False  # keep the probabilities differentiable, on the call's device


def _probabilities(
    rec: _Recorder,
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    scale: float | None,
) -> None:
    """Softmax rows of a seeded query subset of one SDPA call `(B, H, N, D)`, appended to the sink."""
    n_q, n_k = query.shape[-2], key.shape[-2]
    g = torch.Generator().manual_seed(rec.seed)
    keep = torch.randperm(n_q, generator=g)[: min(rec.queries, n_q)].sort().values
    with torch.set_grad_enabled(rec.grad and torch.is_grad_enabled()):
        q = query[..., keep.to(query.device), :].float()
        k = key.float()
        if k.shape[-3] != q.shape[-3]:  # grouped-query attention: keys shared by head groups
            k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
        logits = (
            q @ k.transpose(-1, -2) * (scale if scale is not None else 1 / math.sqrt(q.shape[-1]))
        )
        if attn_mask is not None:
            mask = (
                attn_mask[..., keep.to(attn_mask.device), :]
                if attn_mask.shape[-2] == n_q
                else attn_mask
            )
            if mask.dtype == torch.bool:
                logits = logits.masked_fill(~mask, float("-inf"))
            else:
                logits = logits + mask.float()
        if is_causal:
            later = torch.arange(n_k, device=q.device)[None, :] > keep.to(q.device)[:, None]
            logits = logits.masked_fill(later, float("-inf"))
        probs = logits.softmax(dim=-1)
        if rec.heads == "mean":
            probs = probs.mean(dim=-3)
    rec.sink.append(AttentionCall(rec.module, keep, probs if rec.grad else probs.cpu(), n_q, n_k))


def _recording_sdpa(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw
):
    out = _SDPA(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
        scale=scale, **kw,
    )  # fmt: skip
    rec = _CURRENT.get()
    if rec is not None:
        _probabilities(rec, query, key, attn_mask, is_causal, scale)
    return out


@functools.cache
def _recording_class(inner: type) -> type:
    """A processor class that runs `inner`'s processor under a recorder. It carries `inner`'s
    `__call__` signature, which diffusers reads to decide which keyword arguments to pass."""

    def __call__(self, attn, *args, **kwargs):
        token = _CURRENT.set(self._recorder)
        try:
            return self._inner(attn, *args, **kwargs)
        finally:
            _CURRENT.reset(token)

    __call__.__signature__ = inspect.signature(inner.__call__)

    def __getattr__(self, name):  # what the module asks of its processor, the inner one answers
        return getattr(self.__dict__["_inner"], name)

    return type(
        f"Recording{inner.__name__}", (), {"__call__": __call__, "__getattr__": __getattr__}
    )


def attention_modules(block: nn.Module) -> dict[str, nn.Module]:
    """A block's attention modules by their path in it: diffusers' (those with a `processor`),
    else this toolkit's own, which call SDPA themselves (classes named `...Attention`)."""
    found = {n: m for n, m in block.named_modules() if hasattr(m, "processor")}
    return found or {
        n: m for n, m in block.named_modules() if n and type(m).__name__.endswith("Attention")
    }


@contextlib.contextmanager
def capture_attention(
    denoiser: nn.Module,
    blocks: list[str],
    queries: int = 64,
    seed: int = 0,
    heads: str = "mean",
    grad: bool = False,
) -> Iterator[list[AttentionCall]]:
    """Record attention probabilities in `blocks` while the denoiser runs inside the context.

    Args:
        denoiser: the adapter's denoiser.
        blocks: block paths (`Backbone.block_names()` entries) whose attention is recorded.
        queries: query rows kept per call (a seeded subset: the same rows for the same seed).
        seed: the subset's seed.
        heads: "mean" averages the heads (what scores use), "all" keeps them.
        grad: keep the probabilities in the autograd graph, on the call's device (a loss on
            them, `protect`'s attention term); otherwise they are detached copies on the CPU.

    Yields:
        The list the calls are appended to, in the order they run.
    """
    if heads not in ("mean", "all"):
        raise ValueError(f"heads={heads!r}: choose mean or all")
    calls: list[AttentionCall] = []
    swapped: list[tuple[nn.Module, Any]] = []
    hooks = []
    torch.nn.functional.scaled_dot_product_attention = _recording_sdpa
    try:
        for block in blocks:
            for name, module in attention_modules(denoiser.get_submodule(block)).items():
                rec = _Recorder(f"{block}.{name}", queries, seed, heads, calls, grad)
                if hasattr(module, "processor"):
                    inner = module.processor
                    wrapper = _recording_class(type(inner))()
                    wrapper.__dict__.update(_inner=inner, _recorder=rec)
                    module.processor = wrapper
                    swapped.append((module, inner))
                else:
                    hooks.append(_enter_on_forward(module, rec))
        yield calls
    finally:
        torch.nn.functional.scaled_dot_product_attention = _SDPA
        for module, inner in swapped:
            module.processor = inner
        for handles in hooks:
            for h in handles:
                h.remove()


def _enter_on_forward(module: nn.Module, rec: _Recorder) -> list[Any]:
    """Record while a processor-less attention module runs (forward pre-hook in, hook out)."""
    tokens: list[contextvars.Token] = []

    def enter(*_: Any) -> None:
        tokens.append(_CURRENT.set(rec))

    def leave(*_: Any) -> None:
        _CURRENT.reset(tokens.pop())

    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]


def _layout(
    call: AttentionCall, grid: tuple[int, int, int], text_tokens: int, text_first: bool
) -> tuple[int, int, slice | None] | None:
    """Where a call's video tokens start, tokens per frame, and the text's keys (joint
    attention); None for a layout `attention_share` does not read."""
    f, h, w = grid
    video, n = f * h * w, call.n_queries
    if n != call.n_keys:
        return None
    if n == video:
        return 0, h * w, None
    if text_tokens and n == video + text_tokens:
        text = slice(0, text_tokens) if text_first else slice(video, video + text_tokens)
        return (text_tokens if text_first else 0), h * w, text
    if n == f and f > 1:
        return 0, 1, None
    return None


def attention_maps(
    call: AttentionCall,
    grid: tuple[int, int, int],
    text_tokens: int = 0,
    text_first: bool = True,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Where each kept video query attends over the video: a map per query, for the explorer.

    Args:
        call, grid, text_tokens, text_first: as `attention_share`.
        limit: keep `limit` of the video queries, evenly spread over them in token order (so
            over the frames).

    Returns:
        `tokens` `(k,)`: the queries' video token indices (frame-major, `f*H*W + y*W + x`), and
        `maps` `(k, F*H*W)`: their probabilities on the video keys (first sample, heads averaged;
        text keys left out, so a row sums to the video's share). None unless the call attends
        over the whole video (self or joint attention: temporal attention has no spatial map).
    """
    layout = _layout(call, grid, text_tokens, text_first)
    if layout is None or layout[1] == 1:
        return None
    start, _, _ = layout
    video = grid[0] * grid[1] * grid[2]
    rel = call.queries - start
    rows = ((rel >= 0) & (rel < video)).nonzero().flatten()
    if limit is not None and len(rows) > limit:
        rows = rows[torch.linspace(0, len(rows) - 1, limit).round().long().unique()]
    probs = call.probs if call.probs.dim() == 3 else call.probs.mean(1)
    return rel[rows], probs[0, rows, start : start + video]


def attention_share(
    call: AttentionCall, grid: tuple[int, int, int], text_tokens: int = 0, text_first: bool = True
) -> dict[str, float] | None:
    """The shares of `share_tensors`, as numbers (what the attention job reports)."""
    shares = share_tensors(call, grid, text_tokens, text_first)
    return None if shares is None else {k: float(v) for k, v in shares.items()}


def share_tensors(
    call: AttentionCall, grid: tuple[int, int, int], text_tokens: int = 0, text_first: bool = True
) -> dict[str, torch.Tensor] | None:
    """How much the later frames' queries attend to the conditioning frame (and to the text).

    The call's token order is read from its lengths, as the families lay tokens out:
    - `F*H*W` queries and keys: self-attention over the video tokens, frame by frame;
    - `F*H*W + T` of each: joint attention with `T` text tokens, before the video (CogVideoX)
      or after it (`text_first=False`: HunyuanVideo);
    - `F` of each: temporal attention (one sequence per position), frame 0 first.
    Any other call (cross-attention to text, a UNet's per-frame attention) is not read: None.

    Args:
        call: one recorded call (heads averaged or not).
        grid: the block's token grid `(F, H, W)` (`Backbone.token_grid`).
        text_tokens: text tokens in joint attention (the prompt embedding's length).
        text_first: whether joint attention puts the text before the video.

    Returns:
        `frame0`: the mean probability mass that a later frame's query puts on frame 0's tokens;
        `text` (joint attention only): the mass on the text tokens; 0-d tensors, in the graph
        when the call was recorded with `grad`. None where the call's layout is none of the
        above, or no kept query is on a later frame.
    """
    layout = _layout(call, grid, text_tokens, text_first)
    if layout is None:
        return None
    start, per_frame, text = layout
    f, h, w = grid
    video = f * h * w
    rel = call.queries - start
    later = ((rel >= per_frame) & (rel < video if per_frame > 1 else rel < f)).nonzero().flatten()
    if len(later) == 0:
        return None
    probs = call.probs if call.probs.dim() == 3 else call.probs.mean(1)  # (B, k, keys)
    rows = probs[:, later.to(probs.device)]
    out = {"frame0": rows[..., start : start + per_frame].sum(-1).mean()}
    if text is not None:
        out["text"] = rows[..., text].sum(-1).mean()
    return out
