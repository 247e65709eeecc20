"""The model side of protection: from a perturbed image to the objective the loop maximises.

Per step: the perturbed photo is resized (differentiably) to the model's resolution, turned into
the denoiser's conditioning, and the denoiser runs once on a noised latent at one of the
profile's timesteps (cycled; fixed noise per timestep, so target features are computed once).
Block features of the profile's collapse and anchor layers come from the same nnsight trace;
when no term needs the denoiser's output the pass stops after the deepest profile layer.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import is_fake

from anti_i2v.models.attention import capture_attention, share_tensors
from anti_i2v.models.backbones import Backbone
from anti_i2v.models.backbones.base import Conditioning
from anti_i2v.models.capture import block_order, capture_vae, trace_blocks
from anti_i2v.protect.losses import diffusion_loss, ira_loss, irc_loss

# Terms and the sign with which each enters the maximised objective.
TERM_SIGNS = {
    "irc": -1.0,  # pull anchors toward the collapse layer: minimise the distance
    "ira": -1.0,  # targeted: pull anchors toward the target's (untargeted flips the sign)
    "diffusion": +1.0,  # vanilla diffusion loss on the reference video: maximise
    "lpips": -1.0,  # perceptual distance to the original: keep small
    "sds": +1.0,  # score-distillation surrogate (no denoiser Jacobian)
    "latent_pull": -1.0,  # VAE latent of the photo toward the target's latent (Mist, PhotoGuard)
    # temporal attention targeting (after Vid-Freeze and I2VGuard): the share of later frames'
    # attention on the photo's frame, in the anchor blocks: minimise it
    "attention": -1.0,
    # the diffusion loss after a short sampler trajectory (`unrolled_clean`): maximise
    "unrolled": +1.0,
}
NEEDS_OUTPUT = {"diffusion", "sds", "unrolled"}
NEEDS_FEATURES = {"irc", "ira", "attention"}
ATTENTION_QUERIES = 64  # query rows whose attention the attention term reads, per call (seeded)
UNROLL_STEPS = 2  # sampler steps the unrolled term backpropagates through (the first is traced)


def unrolled_clean(
    backbone: Backbone,
    cond: Conditioning,
    noisy: torch.Tensor,
    clean_hat: torch.Tensor,
    t: float,
    steps: int = UNROLL_STEPS,
) -> torch.Tensor:
    """The clean-latent estimate at the end of a short deterministic sampler trajectory from t.

    `clean_hat` is the denoiser's estimate at t (from the call already made); each further step
    goes to the next of `steps` evenly spaced timesteps towards 0 by DDIM's move (keep the
    implied noise, re-noise the estimate with the family's own `add_noise`, which every family
    writes as `a(t) x0 + b(t) noise`; for flow matching it is the Euler step) and asks the
    denoiser again. Each further call is checkpointed, so memory holds one call's activations
    at a time; the gradient goes through every step to the photo.

    Args:
        noisy: the latent the first call saw, `add_noise(latent, noise, t)`.
        clean_hat: `predict_clean` of that call's output, laid out like `noisy`.

    Returns:
        The last step's clean estimate, laid out like `noisy`.
    """
    from torch.utils.checkpoint import checkpoint

    def coefficients(at: float) -> tuple[torch.Tensor, torch.Tensor]:
        ones, zeros = torch.ones_like(noisy), torch.zeros_like(noisy)
        return backbone.add_noise(ones, zeros, at), backbone.add_noise(zeros, ones, at)

    def call(x: torch.Tensor, at: float) -> torch.Tensor:  # `cond` too, by closure
        out = backbone.denoiser(**backbone.denoiser_kwargs(x, cond, at))
        return backbone.predict_clean(x, backbone.hidden(out), at)

    a, b = coefficients(t)
    for j in range(1, steps):
        noise_hat = torch.where(b > 0, (noisy - a * clean_hat) / b.clamp_min(1e-12), 0.0)
        at = t * (1 - j / steps)  # the j-th of `steps` evenly spaced timesteps towards 0
        a, b = coefficients(at)
        noisy = a * clean_hat + b * noise_hat
        # non-reentrant: the gradient reaches what the closure holds (the conditioning) as well
        clean_hat = checkpoint(call, noisy, at, use_reentrant=False)
    return clean_hat


@dataclass
class ObjectiveSpec:
    """Which terms, with which weights, on which layers and timesteps."""

    weights: dict[str, float]
    collapse_layers: list[str]
    anchor_layers: list[str]
    timesteps: list[int]
    clip_frames: int
    # IRA on the VAE encoder too (`vae.encoder.*`, from a profile made with `adapt --vae`):
    # its blocks are read while the photo is encoded, at their own resolution
    vae_anchor_layers: list[str] = field(default_factory=list)
    ira_targeted: bool = True
    seed: int = 0
    early_exit: bool = True
    # Expectation over transformation: the model sees the cloak after these distortions, one per
    # step in turn (see `ModelObjective.seen`); empty: the cloak as it is
    eot: tuple[str, ...] = ()


def _scalar(v: torch.Tensor) -> float:
    """A term's value for the history; NaN for a fake tensor (`anti-i2v plan` runs this code
    under FakeTensorMode, where tensors have shapes and no values)."""
    return math.nan if is_fake(v) else float(v.detach())


def clip_frames_for(backbone: Backbone, frames: int) -> int:
    """Video frames to run so the latent covers the first `frames` frames.

    With temporal compression r, latent frame k >= 1 covers video frames r(k-1)+1 .. rk, so
    the first 4 frames of a 4x model need latent frames 0 and 1, i.e. a 5-frame clip.
    """
    r = next(n for n in range(2, 130) if backbone.latent_frames(n) == 2) - 1
    latents = 1 + -(-(frames - 1) // r)
    return 1 + r * (latents - 1)


class ModelObjective:
    """A callable `x_adv (B, 3, H, W) -> (objective, terms)`; holds the per-photo targets."""

    def __init__(
        self,
        backbone: Backbone,
        spec: ObjectiveSpec,
        clean: torch.Tensor,
        reference: torch.Tensor | None,
        target: torch.Tensor | None,
        lpips_model=None,
    ):
        self.backbone, self.spec, self.lpips = backbone, spec, lpips_model
        self.clean = clean.detach()
        self.reference = reference.detach() if reference is not None else None
        uses = {k for k, w in spec.weights.items() if w}
        if "lpips" in uses and lpips_model is None:
            uses.discard("lpips")
        self.uses = uses
        self.needs_output = bool(uses & NEEDS_OUTPUT)
        self.needs_denoiser = bool(uses & (NEEDS_OUTPUT | NEEDS_FEATURES))
        self.layers: list[str] = []
        self.noise: dict[int, torch.Tensor] = {}
        self.target_feats: dict[int, dict[str, torch.Tensor]] = {}
        self.target_vae: dict[str, torch.Tensor] = {}  # VAE anchors do not depend on t
        self.vae_layers = spec.vae_anchor_layers if "ira" in uses else []
        self.target_latent: torch.Tensor | None = None
        self.step = 0
        self.prepared = False
        self._target = target

    def prepare(self) -> ModelObjective:
        """Run the model once for what every step reuses: block order, noise, target features.

        Kept out of the constructor so building an objective is cheap and side-effect free.
        """
        backbone, spec, uses, target = self.backbone, self.spec, self.uses, self._target
        with torch.no_grad():
            cond = backbone.condition(backbone.resize(self.clean), spec.clip_frames)
            latent = self.reference if self.reference is not None else cond.clean
            # Each photo of a batch draws the noise it would draw alone (its own generator from
            # the seed), so a batch of photos gets the cloaks one-at-a-time runs give.
            gens = [torch.Generator().manual_seed(spec.seed) for _ in range(latent.shape[0])]
            for t in spec.timesteps:
                self.noise[t] = torch.cat(
                    [torch.randn((1, *latent.shape[1:]), generator=g) for g in gens]
                ).to(latent)
            if self.needs_denoiser:
                # every block the timesteps run (both experts' bands for a model of experts)
                order = block_order(
                    backbone,
                    lambda t: backbone.denoiser_kwargs(
                        backbone.add_noise(latent, self.noise[t], t), cond, t
                    ),
                    spec.timesteps,
                )
                wanted = set(spec.collapse_layers) | set(spec.anchor_layers)
                self.layers = [name for name in order if name in wanted]
            source = target if (spec.ira_targeted and target is not None) else self.clean
            if "ira" in uses:
                with capture_vae(backbone, self.vae_layers) as vae_feats:
                    tcond = backbone.condition(backbone.resize(source), spec.clip_frames)
                self.target_vae = dict(vae_feats)
                tlatent = self.reference if self.reference is not None else tcond.clean
                for t in spec.timesteps:
                    feats, _, _ = self._forward(tcond, tlatent, t, need_output=False)
                    self.target_feats[t] = {k: feats[k] for k in spec.anchor_layers if k in feats}
            if "latent_pull" in uses and target is not None:
                self.target_latent = backbone.condition(
                    backbone.resize(target), spec.clip_frames
                ).clean
        self.prepared = True
        return self

    def _forward(self, cond, latent, t: int, need_output: bool, attend: bool = False):
        """Block features (laid out), the noisy latent and the output (when needed), and, with
        `attend`, the anchors' attention calls, differentiable (`capture_attention(grad=True)`)."""
        backbone = self.backbone
        noisy = backbone.add_noise(latent, self.noise[t], t)
        kwargs = backbone.denoiser_kwargs(noisy, cond, t)
        stop = self.spec.early_exit and not need_output
        active = set(backbone.active_blocks(t))  # a model of experts runs one expert at t
        layers = [name for name in self.layers if name in active]
        attended = [name for name in layers if name in self.spec.anchor_layers] if attend else []
        if not layers and not need_output:
            return {}, (noisy, None), []  # nothing of this call is wanted: the call is not made
        recording = (
            capture_attention(
                backbone.denoiser, attended, ATTENTION_QUERIES, self.spec.seed, grad=True
            )
            if attended
            else contextlib.nullcontext([])
        )
        with recording as calls:
            feats = trace_blocks(
                backbone,
                kwargs,
                layers,
                stop_after_last=stop and bool(layers),
                with_output=need_output,
            )
        output = feats.pop("__output__", None)
        laid = {k: backbone.layout(v, cond) for k, v in feats.items()}
        return laid, (noisy, output), calls

    def __call__(self, adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.prepared:
            self.prepare()
        spec, backbone = self.spec, self.backbone
        t = spec.timesteps[self.step % len(spec.timesteps)]
        self.step += 1
        with capture_vae(backbone, self.vae_layers) as vae_feats:
            cond = backbone.condition(backbone.resize(self.seen(adv)), spec.clip_frames)
        latent = self.reference if self.reference is not None else cond.clean
        terms: dict[str, torch.Tensor] = {}
        if self.needs_denoiser:
            sds_latent = cond.clean if "sds" in self.uses else latent
            feats, (noisy, output), calls = self._forward(
                cond, sds_latent, t, self.needs_output, attend="attention" in self.uses
            )
            # Only the blocks that ran at t: a model of experts runs one expert per timestep, so
            # a chosen block of the other expert has no say in this step.
            anchors = {k: feats[k] for k in spec.anchor_layers if k in feats}
            collapse = {k: feats[k] for k in spec.collapse_layers if k in feats}
            # a term with no block at t is a zero that keeps the graph (its gradient is zero)
            nothing = cond.clean.float().sum() * 0.0
            if "irc" in self.uses:
                terms["irc"] = irc_loss(anchors, collapse) if anchors and collapse else nothing
            if "ira" in self.uses:
                # One mean over every anchor, the denoiser's and the VAE encoder's alike
                reached = anchors | vae_feats
                terms["ira"] = (
                    ira_loss(reached, self.target_feats[t] | self.target_vae)
                    if reached
                    else nothing
                )
            if "attention" in self.uses:
                terms["attention"] = self._frame0_share(calls, cond) if calls else nothing
            if output is not None:
                clean_hat = backbone.predict_clean(noisy, backbone.hidden(output), t)
                if "diffusion" in self.uses:
                    terms["diffusion"] = diffusion_loss(clean_hat, latent)
                if "unrolled" in self.uses:
                    ahead = unrolled_clean(backbone, cond, noisy, clean_hat, t)
                    terms["unrolled"] = diffusion_loss(ahead, latent)
                if "sds" in self.uses:
                    # Score distillation: the residual is a constant direction; no denoiser Jacobian.
                    residual = (cond.clean - clean_hat).detach()
                    terms["sds"] = (residual * cond.clean).mean()
        if "latent_pull" in self.uses and self.target_latent is not None:
            terms["latent_pull"] = diffusion_loss(cond.clean, self.target_latent)
        if "lpips" in self.uses:
            terms["lpips"] = self.lpips(adv * 2 - 1, self.clean * 2 - 1).mean()
        # float32 whatever the model's dtype: the loop's sign step and history read it
        value = sum(self.sign(k) * spec.weights[k] * v.float() for k, v in terms.items())
        if not terms:
            raise ValueError(f"no loss term is active among {sorted(spec.weights)}")
        return value, {k: _scalar(v) for k, v in terms.items()}

    def _frame0_share(self, calls: list, cond) -> torch.Tensor:
        """The mean share of later frames' attention on the photo's frame over the anchors'
        readable calls (`share_tensors`), in the graph; zero (in the graph) when none is."""
        backbone = self.backbone
        grid, text = backbone.token_grid(cond), backbone.joint_text_tokens()
        shares = [
            s["frame0"]
            for c in calls
            if (s := share_tensors(c, grid, text, backbone.joint_text_first)) is not None
        ]
        if not shares:
            return cond.clean.float().sum() * 0.0
        return torch.stack([s.float().to(cond.clean.device) for s in shares]).mean()

    def seen(self, adv: torch.Tensor) -> torch.Tensor:
        """What the model sees this step: `adv` `(B, 3, H, W)`, or it after this step's EOT distortion.

        JPEG, platform recompression and VAE purification have no useful gradient, so the
        distortion is applied straight-through (BPDA): the forward pass sees the distorted image,
        the gradient flows as if the distortion were the identity. The distortions cycle with the
        step and draw their noise from the seed and the step, so a run is reproducible.
        """
        if not self.spec.eot:
            return adv
        from anti_i2v.protect.distortions import distort

        k = self.step - 1  # __call__ has already counted this step
        name = self.spec.eot[k % len(self.spec.eot)]
        with torch.no_grad():
            out = torch.stack(
                [
                    distort(a, name, self.spec.seed + k, self.backbone)
                    for a in adv.detach().float().cpu()
                ]
            ).to(adv)
        return adv + (out - adv).detach()

    def sign(self, term: str) -> float:
        if term == "ira" and not self.spec.ira_targeted:
            return +1.0  # untargeted: push away from the clean image's features
        return TERM_SIGNS[term]


class EnsembleObjective:
    """The mean of several models' objectives on one cloak (transfer: `protect --ensemble`).

    Each member is a `ModelObjective` with its own backbone, layers, timesteps and reference
    video; the image-side LPIPS term belongs to the first only, so it counts once. Terms of the
    members after the first are recorded as `MODEL/term` in the history.
    """

    def __init__(self, parts: list[tuple[str, ModelObjective]]):
        if not parts:
            raise ValueError("an ensemble needs at least one model")
        self.parts = parts

    def prepare(self) -> EnsembleObjective:
        for _, objective in self.parts:
            objective.prepare()
        return self

    def __call__(self, adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        values, terms = [], {}
        for i, (name, objective) in enumerate(self.parts):
            value, mine = objective(adv)
            values.append(value)
            terms.update({(k if i == 0 else f"{name}/{k}"): v for k, v in mine.items()})
        return torch.stack(values).mean(), terms
