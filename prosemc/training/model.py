"""The Meta AutoEncoder's torch model (training side): config, encoder/decoder modules, Laplace rate model.

    shipped (pooled, diagonal):  m = mean_n clip(x)  [B, 1, D];  y = m * a + c;  m' = clamp((y' ) * a' + c', 0, 6)
    dense variants:  nested  y = E(x) [B, N, L]; level k sends channels m_{k-1}..m_k; x'_k = clamp(D(y'[:m_k]))
                     residual  y_k = E_k(x - x'_{k-1});  x'_k = clamp(s_k),  s_k = s_{k-1} + D_k(y'_k)
    y' = mean + round(y - mean): straight-through rounding for the decoder, additive uniform noise for the rate
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prosemc.errors import InputError


TABLE_PRECISION_BITS = 22  # exported counts: floor(P * 2**22) + 1 per symbol
TAIL_MASS = 2.0**-24  # alphabet radius r_c: P(|s| > r_c) below this under the channel's Laplace
MAX_RADIUS = 2047  # alphabet -r..r stays within entropy.MAX_ALPHABET
MIN_SCALE, MAX_SCALE = 0.05, 200.0
SUPPORTED_MODELS = ("lite",)


@dataclass
class MetaAEConfig:
    """Architecture and training settings; stored in the weights file's metadata."""

    variant: str = "nested"  # "nested" (Matryoshka latents) or "residual" (each level codes the residual)
    levels: tuple[int, ...] = (1280,)  # cumulative latent channels after each autoencoder level
    token_dim: int = 1280
    pooled: bool = True  # the autoencoder codes the mean token (what the pooled classifier sees), not each token
    transform: str = "diagonal"  # "diagonal": learned per-channel steps; "linear": dense maps (encoder_hidden...)
    initial_step: float = 0.15  # diagonal transform: starting quantiser step of every channel
    encoder_hidden: int = 0  # 0: linear encoder
    decoder_hidden: int = 0  # 0: clamp(linear) decoder
    clip: tuple[float, float] = (0.0, 6.0)
    target_bytes: tuple[float, ...] = (330.0,)  # cumulative payload bytes per autoencoder level (rate controller)
    refine_steps: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5, 0.25)  # scalar refinement levels after the autoencoder's
    kl_weight: float = 1.0
    logit_weight: float = 1.0  # relative error of every token's (and the pooled) classifier logits, all classes
    cos_weight: float = 1.0
    epochs: int = 60
    batch: int = 64
    lr: float = 2e-3
    views: int = 48
    seed: int = 0

    def validate(self) -> None:
        if self.transform == "diagonal" and self.variant == "residual":
            self.transform = "linear"  # residual levels need dense maps
        if self.variant not in ("nested", "residual"):
            raise InputError(f"variant must be 'nested' or 'residual', got {self.variant!r}")
        levels = tuple(int(m) for m in self.levels)
        if not levels or any(m < 1 for m in levels) or any(b <= a for a, b in zip(levels, levels[1:])):
            raise InputError(f"--levels must be increasing positive channel counts such as 32,64,128, got {levels}")
        if len(levels) > 16 or levels[-1] > 2048:
            raise InputError(f"--levels allows at most 16 levels and 2048 channels, got {levels}")
        if self.transform not in ("diagonal", "linear"):
            raise InputError(f"transform must be 'diagonal' or 'linear', got {self.transform!r}")
        if len(self.target_bytes) != len(levels):
            self.target_bytes = default_targets(len(levels))
        self.levels = levels
        self.refine_steps = tuple(float(v) for v in self.refine_steps)
        if any(not 0 < b < a for a, b in zip(self.refine_steps, self.refine_steps[1:])) or len(self.refine_steps) > 15:
            raise InputError(f"refine steps must be positive and shrinking, got {self.refine_steps}")


def default_targets(count: int) -> tuple[float, ...]:
    """Cumulative byte targets for count levels: 430 B for level 1 growing to 2900 B for the last."""
    if count == 1:
        return (430.0,)
    return tuple(float(430.0 * (2900.0 / 430.0) ** (k / (count - 1))) for k in range(count))


class Decoder(nn.Module):
    """Latent [.., m] -> [.., D]: linear (or MLP with one ReLU hidden layer); clamping happens outside."""

    def __init__(self, width: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Linear(width, hidden), nn.Linear(hidden, dim)] if hidden else [nn.Linear(width, dim)]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            z = layer(z)
            if index < len(self.layers) - 1:
                z = torch.relu(z)
        return z


class Encoder(Decoder):
    """Tokens [.., D] -> latent [.., m]: linear (or MLP with one ReLU hidden layer)."""


class Diagonal(nn.Module):
    """Per-channel scale and offset, [.., D] -> [.., D]: learned quantiser step sizes (y = x * weight + bias)."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(scale)))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


class DiagonalMap(nn.Module):
    """A one-layer map holding a Diagonal (so encoders and decoders share the `layers` structure)."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Diagonal(dim, scale)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[0](x)


class MetaAE(nn.Module):
    """The Meta AutoEncoder (see module docstring); forward gives every level's reconstruction and rate."""

    def __init__(self, config: MetaAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        levels, dim = config.levels, config.token_dim
        widths = [levels[0]] + [b - a for a, b in zip(levels, levels[1:])]
        if config.transform == "diagonal":
            if config.variant != "nested" or levels != (dim,):
                raise InputError(f"the diagonal transform codes all {dim} channels in one nested level, got {levels}")
            self.encoders = nn.ModuleList([DiagonalMap(dim, 1.0 / config.initial_step)])
            self.decoders = nn.ModuleList([DiagonalMap(dim, config.initial_step)])
        elif config.variant == "nested":
            self.encoders = nn.ModuleList([Encoder(dim, config.encoder_hidden, levels[-1])])
            self.decoders = nn.ModuleList([Decoder(levels[-1], config.decoder_hidden, dim)])
        else:
            self.encoders = nn.ModuleList([Encoder(dim, config.encoder_hidden, w) for w in widths])
            self.decoders = nn.ModuleList([Decoder(w, config.decoder_hidden, dim) for w in widths])
        self.latent_mean = nn.Parameter(torch.zeros(levels[-1]))
        self.latent_log_scale = nn.Parameter(torch.zeros(levels[-1]))

    @property
    def scales(self) -> torch.Tensor:
        return self.latent_log_scale.exp().clamp(MIN_SCALE, MAX_SCALE)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(*self.config.clip)

    def quantise(self, y: torch.Tensor, channels: slice, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(y' for the decoder, rate bits [B]) of latents y [B, N, m] on channels of the shared entropy model."""
        mean, scale = self.latent_mean[channels], self.scales[channels]
        centred = y - mean
        rounded = torch.round(centred)
        hard = mean + centred + (rounded - centred).detach()
        noisy = centred + torch.empty_like(centred).uniform_(-0.5, 0.5) if train else rounded
        bits = laplace_bits(noisy, scale).sum(dim=(1, 2))
        return hard, bits

    def forward(self, x: torch.Tensor, train: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x [B, N, D] -> (reconstructions x'_k [B, N, D], rate bits_k [B]) for every level k."""
        levels = self.config.levels
        starts = (0,) + levels[:-1]
        outputs, rates = [], []
        if self.config.variant == "nested":
            y = self.encoders[0](x)
            centred = y - self.latent_mean
            rounded = torch.round(centred)
            hard = self.latent_mean + centred + (rounded - centred).detach()
            noisy = centred + torch.empty_like(centred).uniform_(-0.5, 0.5) if train else rounded
            channel_bits = laplace_bits(noisy, self.scales).sum(dim=1)  # [B, L]
            rates = [channel_bits[:, start:stop].sum(dim=1) for start, stop in zip(starts, levels)]
            decoder = self.decoders[0]
            if isinstance(decoder.layers[0], nn.Linear) and len(decoder.layers) == 1:  # linear: level k's output is the running sum of per-level blocks
                linear = decoder.layers[0]
                running = linear.bias
                for start, stop in zip(starts, levels):
                    running = running + hard[..., start:stop] @ linear.weight[:, start:stop].T
                    outputs.append(self.clamp(running))
            else:
                for stop in levels:
                    mask = torch.zeros(levels[-1], dtype=x.dtype)
                    mask[:stop] = 1.0
                    outputs.append(self.clamp(decoder(hard * mask)))
        else:
            state = torch.zeros_like(x)
            for k, (start, stop) in enumerate(zip(starts, levels)):
                residual = x - self.clamp(state) if k else x
                hard, bits = self.quantise(self.encoders[k](residual), slice(start, stop), train)
                state = state + self.decoders[k](hard)
                outputs.append(self.clamp(state))
                rates.append(bits)
        return outputs, rates


def laplace_bits(value: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 P(round-interval of value) under Laplace(0, scale): the rate of integer symbols (noisy in training)."""
    magnitude = value.abs()
    upper = (0.5 - magnitude) / scale  # P = G(upper) - G(lower), lower = upper - 1/scale; G the standard CDF
    lower = (-0.5 - magnitude) / scale

    def cdf(t: torch.Tensor) -> torch.Tensor:
        return torch.where(t < 0, 0.5 * torch.exp(t.clamp(max=0)), 1 - 0.5 * torch.exp(-t.clamp(min=0)))

    probability = (cdf(upper) - cdf(lower)).clamp(min=1e-9)
    return -torch.log2(probability)

def pooled_tokens(tokens: np.ndarray) -> np.ndarray:
    """The mean token of each view, [S, 1, D] float32 (computed in float64, clipped like the codec does)."""
    out = np.empty((tokens.shape[0], 1, tokens.shape[2]), dtype=np.float32)
    for start in range(0, tokens.shape[0], 256):
        chunk = np.clip(tokens[start : start + 256].astype(np.float32), 0.0, 6.0)
        out[start : start + 256, 0] = chunk.mean(axis=1, dtype=np.float64)
    return out
