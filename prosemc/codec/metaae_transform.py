"""The per-token Meta AutoEncoder's linear transform (format prosemc-metaae-token/2), numpy only.

    tokens x [N, D] --minus mean--> [T, R, C, D] (T tiles of the model's R x C token grid, row-major)
        --2-D DCT-II over each tile's grid, per channel--> frequencies [T, R*C, D]
        --per band group p (by u + v of the frequency): @ rotation_p [D, D], * gain [D]--> coefficients [N, D]
    decoder: coefficients / gain @ rotation_p^T --inverse DCT--> + mean --> tokens' [N, D]

Both the DCT and the rotations (principal directions of each band group's frequencies, trained) are orthonormal,
so a coefficient's error reaches the tokens with its energy divided by gain^2 and spread over the tile's tokens as
the square of its DCT basis function. A model without a grid (R = C = 0) skips the DCT: then each row is a token,
coded on its own ("per token"), with one rotation.

The DCT mixes the tokens of a tile: the coefficient rows are spatial frequencies, not tokens. The codec is still one
model with ordered prefix levels at every rate; only the first levels now carry the low frequencies (what pooling
cloud layers depend on most) of the strongest channels of every token at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


def dct_basis(size: int) -> np.ndarray:
    """The orthonormal DCT-II matrix [size, size] (row u = frequency u), float64."""
    n = np.arange(size)
    basis = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size)) * np.sqrt(2.0 / size)
    basis[0] /= np.sqrt(2.0)
    return basis


def zigzag_index(rows: int, cols: int) -> np.ndarray:
    """u + v of each frequency [R * C] of an R x C grid, row-major: 0 for the mean, larger for finer detail."""
    return (np.arange(rows)[:, None] + np.arange(cols)[None, :]).ravel()


@dataclass(frozen=True)
class GridTransform:
    """mean [D], rotations [P, D, D] (columns = coefficient channels), gain [D], band group of each frequency."""

    mean: np.ndarray  # [D] float32
    rotation: np.ndarray  # [P, D, D] float32, orthonormal
    gain: np.ndarray  # [D] float32 > 0
    rows: int  # token grid of one tile (0, 0: per token, no DCT)
    cols: int
    group_start: tuple[int, ...]  # [P] first u + v of each rotation's band group (grid), (0,) per token

    @property
    def positions(self) -> int:
        """Coefficient rows per tile: R * C frequencies, or 1 (per token: every row is its own tile)."""
        return self.rows * self.cols if self.rows else 1

    @cached_property
    def position_group(self) -> np.ndarray:
        """Rotation group [positions] of each frequency."""
        if not self.rows:
            return np.zeros(1, dtype=np.int64)
        return np.searchsorted(np.array(self.group_start[1:]), zigzag_index(self.rows, self.cols), side="right")

    @cached_property
    def _bases(self) -> tuple[np.ndarray, np.ndarray]:
        return dct_basis(self.rows).astype(np.float32), dct_basis(self.cols).astype(np.float32)

    @cached_property
    def _groups(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.position_group == p) for p in range(len(self.group_start))]

    @cached_property
    def _encoders(self) -> np.ndarray:
        return np.ascontiguousarray(self.rotation * self.gain[None, None, :], dtype=np.float32)

    @cached_property
    def _decoders(self) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(self.rotation, (0, 2, 1)) / self.gain[None, :, None], dtype=np.float32)

    def tiles(self, rows: int) -> int:
        """Tiles T in `rows` tokens, or 0 if the tokens do not fill whole tiles of the grid."""
        if not self.rows:
            return rows
        size = self.rows * self.cols
        return rows // size if rows % size == 0 else 0

    def forward(self, tokens: np.ndarray) -> np.ndarray:
        """Coefficients [N, D] float64 of tokens [N, D] (N a whole number of tiles), row t * positions + f."""
        centred = np.asarray(tokens, dtype=np.float32) - self.mean
        if not self.rows:
            return (centred @ self._encoders[0]).astype(np.float64)
        frequencies = self._spatial(centred, transpose=False)
        out = np.empty_like(frequencies)
        for group, index in enumerate(self._groups):
            out[:, index] = frequencies[:, index] @ self._encoders[group]
        return out.reshape(-1, out.shape[-1]).astype(np.float64)

    def inverse(self, coefficients: np.ndarray) -> np.ndarray:
        """Tokens' [N, D] float32 from coefficients [N, D]."""
        values = np.asarray(coefficients, dtype=np.float32)
        if not self.rows:
            return values @ self._decoders[0] + self.mean
        values = values.reshape(-1, self.positions, values.shape[-1])
        frequencies = np.empty_like(values)
        for group, index in enumerate(self._groups):
            frequencies[:, index] = values[:, index] @ self._decoders[group]
        tokens = self._spatial(frequencies.reshape(-1, frequencies.shape[-1]), transpose=True)
        return tokens.reshape(-1, tokens.shape[-1]) + self.mean

    def _spatial(self, values: np.ndarray, transpose: bool) -> np.ndarray:
        """[N, D] -> [T, R * C, D]: 2-D DCT (or its inverse) of each tile, as two matrix products."""
        row_basis, col_basis = self._bases
        if transpose:
            row_basis, col_basis = row_basis.T, col_basis.T
        tiles = values.reshape(-1, self.rows, self.cols * values.shape[-1])
        mixed = np.matmul(row_basis, tiles).reshape(-1, self.rows, self.cols, values.shape[-1])
        mixed = np.matmul(col_basis, mixed)  # [T, R, C, D]: the column transform, per row
        return mixed.reshape(-1, self.rows * self.cols, values.shape[-1])

    def error_spread(self) -> np.ndarray:
        """[positions, positions]: energy that a unit error at frequency f puts on token n of its tile (B_f(n)^2)."""
        if not self.rows:
            return np.ones((1, 1))
        row_basis, col_basis = (dct_basis(n) for n in (self.rows, self.cols))
        return np.einsum("ui,vj->uvij", row_basis ** 2, col_basis ** 2).reshape(self.positions, self.positions)
