"""Encoder artifacts: a trained autoencoder on disk (one per z_u batch) and the object that embeds.

save_artifact writes portable files only (state_dict + JSON, no pickles) and returns their
sha256 for the metadata DB; UserEncoder loads them for batch embedding and the NRT worker.

Integrity: the sha256 is also written beside the files (SHA256), and every load checks the
files against it (and against the metadata DB's record where the caller passes it:
publish.load_encoder), so a changed, truncated or half-written artifact is refused with
ArtifactIntegrityError instead of embedding with the wrong weights. save_artifact never
writes into a directory that already holds an artifact (a batch id collision).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from representation.model import AutoencoderConfig, InputBlock, UserAutoencoder, observed_mask
from representation.train import Normaliser, TrainResult
from userrep.faults import fault_point

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the file layout or the meaning of a field changes
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
NORMALISER_FILE = "normaliser.json"
METRICS_FILE = "metrics.json"
ARTIFACT_FILES = (CONFIG_FILE, METRICS_FILE, MODEL_FILE, NORMALISER_FILE)
SHA_FILE = "SHA256"  # artifact_sha256 of the files above, written last
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class ArtifactIntegrityError(ValueError):
    """An artifact's files do not match their recorded sha256."""


def input_schema_hash(feature_names: Sequence[str]) -> str:
    """sha256 of the ordered input feature names: an encoder only accepts the layout it saw."""
    return hashlib.sha256(json.dumps(list(feature_names)).encode()).hexdigest()


def artifact_sha256(directory: Path) -> str:
    """sha256 over the artifact files in sorted order (name and content of each)."""
    digest = hashlib.sha256()
    for name in sorted(ARTIFACT_FILES):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256((Path(directory) / name).read_bytes()).digest())
    return digest.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def save_artifact(directory: Path, result: TrainResult, extra: dict | None = None) -> str:
    """Write model.pt, config.json, normaliser.json, metrics.json; return artifact_sha256.

    extra (JSON-able) is stored in config.json, typically the input feature names and their
    input_schema_hash; the hash is added when only the names are given.
    """
    extra = dict(extra or {})
    if "feature_names" in extra:
        extra.setdefault("input_schema_hash", input_schema_hash(extra["feature_names"]))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    taken = [n for n in (*ARTIFACT_FILES, SHA_FILE) if (directory / n).exists()]
    if taken:  # checked before anything is written: never overwrite another batch's encoder
        raise FileExistsError(
            f"{directory} already holds an encoder artifact ({', '.join(taken)}): "
            "its batch id is taken; train again for a new id"
        )
    torch.save(result.model.state_dict(), directory / MODEL_FILE)
    config = {
        "format_version": FORMAT_VERSION,
        "autoencoder": asdict(result.config),
        "train": asdict(result.train_config),
        "blocks": [asdict(b) for b in result.blocks],
        "extra": extra,
    }
    _write_json(directory / CONFIG_FILE, config)
    _write_json(directory / NORMALISER_FILE, result.normaliser.to_dict())
    _write_json(directory / METRICS_FILE, result.metrics)
    sha = artifact_sha256(directory)
    (directory / SHA_FILE).write_text(sha + "\n")
    log.info("saved encoder artifact %s (sha256 %s)", directory, sha[:12])
    fault_point("train:artifact-saved")
    return sha


def recorded_sha256(directory: Path) -> str | None:
    """The sha256 save_artifact wrote beside the files (None for artifacts saved before)."""
    try:
        return (Path(directory) / SHA_FILE).read_text().strip()
    except FileNotFoundError:
        return None


def verify_artifact(directory: Path, expected_sha256: str | None = None) -> None:
    """Raise ArtifactIntegrityError unless the files match `expected_sha256` (a metadata DB
    record; a placeholder that is not a sha256 is not checked) and the sha256 beside them."""
    directory = Path(directory)
    records = [("the metadata DB", expected_sha256), (SHA_FILE, recorded_sha256(directory))]
    wanted = [(where, sha) for where, sha in records if sha and _SHA_RE.match(sha)]
    if not wanted:
        log.warning("artifact %s has no recorded sha256: not verified", directory)
        return
    try:
        actual = artifact_sha256(directory)
    except FileNotFoundError as err:
        raise ArtifactIntegrityError(
            f"artifact {directory} is incomplete ({Path(err.filename).name} missing)"
        ) from None
    for where, sha in wanted:
        if actual != sha:
            raise ArtifactIntegrityError(
                f"artifact {directory} does not match its recorded sha256 ({where}: "
                f"{sha[:12]}..., files: {actual[:12]}...): it changed or was partly written "
                "after training; restore it or train a new batch"
            )


class UserEncoder:
    """Inference side of a batch: raw input rows (NaN = missing) -> z_u, deterministic."""

    def __init__(
        self,
        model: UserAutoencoder,
        normaliser: Normaliser,
        extra: dict[str, Any] | None = None,
    ):
        self.model = model.eval()
        self.normaliser = normaliser
        self.config: AutoencoderConfig = model.config
        self.blocks: tuple[InputBlock, ...] = model.blocks
        self.extra: dict[str, Any] = dict(extra or {})

    verify = staticmethod(verify_artifact)

    @classmethod
    def from_result(cls, result: TrainResult, extra: dict | None = None) -> UserEncoder:
        """Embed straight from a training run, exactly as the saved artifact would."""
        return cls(result.model, result.normaliser, extra)

    @classmethod
    def load(cls, directory: Path, expected_sha256: str | None = None) -> UserEncoder:
        """Load an artifact, refusing files that changed since saving (verify_artifact)."""
        directory = Path(directory)
        verify_artifact(directory, expected_sha256)
        config = json.loads((directory / CONFIG_FILE).read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported artifact format {config.get('format_version')}")
        blocks = [InputBlock(**b) for b in config["blocks"]]
        model = UserAutoencoder(AutoencoderConfig(**config["autoencoder"]), blocks)
        state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        normaliser = Normaliser.from_dict(json.loads((directory / NORMALISER_FILE).read_text()))
        return cls(model, normaliser, config.get("extra"))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def embed(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """(n, input_dim) raw features, NaN = missing -> (n, latent_dim) float32 z_u.

        Bit-for-bit reproducible for the same input, batch_size and torch thread count, and
        bit-identical to Normaliser.transform followed by UserAutoencoder.encode (the input
        stage is fused; the Linear layers see the very same matrix). Small batches are faster
        on CPU: one buffer is reused instead of fresh ones page-faulted per batch.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.config.input_dim:
            raise ValueError(f"expected (n, {self.config.input_dim}) input, got {x.shape}")
        out = np.empty((len(x), self.latent_dim), dtype=np.float32)
        if self.model.training:  # eval() walks every submodule: ~0.2 ms a one-user NRT embed
            self.model.eval()
        with torch.inference_mode():
            stage = _InputStage(self.normaliser, self.model, min(batch_size, max(len(x), 1)))
            for start in range(0, len(x), batch_size):
                h = stage(x[start : start + batch_size])  # (b, input_dim + n_blocks)
                z = self.model.encoder(h)  # (b, latent_dim)
                out[start : start + len(z)] = z.numpy()
        return out


class _InputStage:
    """Normaliser.transform + BlockPresence in one pass into a reused buffer (inference only).

    Writes exactly what BlockPresence(Normaliser.transform(x)) returns: standardised, clipped
    values with 0 where x is not finite, then one 0/1 "block has data" flag per block.
    """

    def __init__(self, normaliser: Normaliser, model: UserAutoencoder, rows: int):
        self.normaliser, self.presence = normaliser, model.presence
        self.mean = torch.from_numpy(normaliser.mean)  # (input_dim,)
        self.std = torch.from_numpy(normaliser.std)  # (input_dim,)
        self.clip = normaliser.clip
        self.membership = model.presence.membership  # (input_dim, n_blocks)
        d, k = self.membership.shape
        self.buf = torch.empty(rows, d + k)  # (rows, input_dim + n_blocks)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        b, d = x.shape
        h = self.buf[:b]  # (b, input_dim + n_blocks)
        values, present = h[:, :d], h[:, d:]
        if x.dtype != np.float32:  # rare (to_matrix gives float32): the unfused path
            return self.presence(torch.from_numpy(self.normaliser.transform(x)))
        if not x.flags.writeable:  # torch.from_numpy warns about read-only arrays
            x = x.copy()
        xt = torch.from_numpy(np.ascontiguousarray(x))  # (b, input_dim)
        observed = observed_mask(xt)  # (b, input_dim) 1.0 = finite
        # float arithmetic throughout: bool masks (isfinite, masked_fill) are ~4x slower on CPU
        torch.nan_to_num(xt, 0.0, 0.0, 0.0, out=values)
        values.sub_(self.mean).div_(self.std).clamp_(-self.clip, self.clip)
        values.mul_(observed)  # (b, input_dim) 0 where x is missing
        torch.mm(observed, self.membership, out=present)  # (b, n_blocks)
        present.clamp_(max=1.0)
        return h
