"""Preference pairs read from a ``worldboot generate --best-of N --verifier CDM`` folder.

Offline DPO (``rl.candidates``): the candidates that best-of-N already drew and the CDM already
scored become the pairs, so no sampling or scoring happens during training. Per sample the pair
is the best and the worst candidate by the verifier's per-token mean log-probability (the
reward of the online recipe), clamped to ``[reward_min, 0]`` as there; a pair whose two scores
are equal after the clamp is a tie and weighs 0.

The folder's codes files (``codes/<id>.safetensors``) hold the source codes the world model
was prompted with; they must equal the training cache's source codes for the same id, which
catches a folder drawn by a world model with another image tokenizer (or from other images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from worldboot.errors import DataError, ModelError
from worldboot.runs import read_rows

PREDICTIONS_FILE = "predictions.jsonl"


@dataclass
class PreferencePair:
    """The preferred and the rejected candidate of one sample, with the source codes they
    were drawn from.

    Attributes:
        source: ``[L]`` the source image's codes.
        chosen: ``[L]`` the candidate the verifier scored highest.
        rejected: ``[L]`` the one it scored lowest.
        preferred: False when both scores are equal (after the clamp): the pair weighs 0.
        margin: The reward of ``chosen`` minus that of ``rejected`` (>= 0).
    """

    source: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor
    preferred: bool
    margin: float


@dataclass
class PairStats:
    """What :func:`read_pairs` kept and skipped."""

    rows: int = 0
    pairs: int = 0
    unscored: int = 0
    single: int = 0


def check_candidates_folder(folder: str | Path) -> None:
    """Refuse a folder that cannot hold candidates, before anything is loaded.

    Raises:
        DataError: One line naming the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"candidates folder not found: {folder}")
    if not (folder / PREDICTIONS_FILE).is_file():
        repeats = sorted(p.name for p in folder.glob("repeat-*") if (p / PREDICTIONS_FILE).is_file())
        hint = f" (it holds {', '.join(repeats)}: give one of them)" if repeats else ""
        raise DataError(f"{folder} has no {PREDICTIONS_FILE}: give a 'worldboot generate' output folder{hint}")


def read_pairs(folder: str | Path, reward_min: float) -> tuple[dict[str, PreferencePair], PairStats]:
    """Sample id -> its preference pair, for every row of ``folder`` with two or more scored
    candidates.

    Args:
        folder: A ``worldboot generate`` output folder (one repeat's folder when it has several).
        reward_min: The clamp's lower end (``rl.reward_min``).

    Raises:
        DataError: The folder is not a predictions folder, or no row has scored candidates
            (generated without ``--verifier`` or with ``--best-of 1``).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    check_candidates_folder(folder)
    stats = PairStats()
    pairs: dict[str, PreferencePair] = {}
    for row in read_rows(folder / PREDICTIONS_FILE):
        stats.rows += 1
        cands = row.get("candidates") or []
        if not isinstance(cands, list) or len(cands) < 2:
            stats.single += 1
            continue
        if any(not isinstance(c, dict) or c.get("mean") is None for c in cands):
            stats.unscored += 1
            continue
        where = f"{folder / PREDICTIONS_FILE}: sample {row['id']!r}"
        codes_path = folder / str(row.get("codes") or "")
        if not row.get("codes") or not codes_path.is_file():
            raise DataError(f"{where}: its codes file {codes_path} is missing")
        try:
            tensors = load_file(str(codes_path))
        except (OSError, RuntimeError, SafetensorError) as err:  # a cut or foreign file
            raise DataError(f"{where}: cannot read {codes_path} ({str(err).splitlines()[0][:120]})") from None
        missing = [k for k in ("source", "candidates", "verifier_mean") if k not in tensors]
        if missing:
            raise DataError(f"{where}: {codes_path} has no {', '.join(missing)} (not a scored best-of-N output)")
        candidates = tensors["candidates"].long()
        mean = tensors["verifier_mean"].float().flatten()
        if candidates.dim() != 2 or candidates.shape[0] != len(mean) or candidates.shape[1] != tensors["source"].numel():
            raise DataError(
                f"{where}: {codes_path} holds candidates of shape {tuple(candidates.shape)} for {len(mean)} scores "
                f"and {tensors['source'].numel()} source codes"
            )
        if torch.isnan(mean).any():
            raise DataError(f"{where}: the verifier's score is NaN in {codes_path}: check the CDM that scored them")
        reward = mean.clamp(min=reward_min, max=0.0)
        best, worst = int(reward.argmax()), int(reward.argmin())
        margin = float(reward[best] - reward[worst])
        pairs[str(row["id"])] = PreferencePair(
            tensors["source"].long().flatten(), candidates[best], candidates[worst], margin > 0, margin
        )
        stats.pairs += 1
    if not pairs:
        raise DataError(
            f"no sample in {folder / PREDICTIONS_FILE} has two or more candidates scored by a verifier "
            f"({stats.rows} rows: {stats.single} with one candidate, {stats.unscored} unscored): generate them "
            "with --best-of 2 or more and --verifier CDM"
        )
    return pairs, stats


def check_source(pair: PreferencePair, sample_id: str, source_codes: torch.Tensor, folder: str | Path) -> None:
    """Refuse a pair drawn from other source codes than the training cache's.

    Raises:
        ModelError: The codes differ (another image tokenizer, or another image under that id).
    """
    mine = source_codes.long().flatten()
    if mine.shape != pair.source.shape or not torch.equal(mine, pair.source):
        raise ModelError(
            f"the candidates in {folder} for sample {sample_id!r} were drawn from other source codes than the "
            "cache's: a world model with another image tokenizer made them (or another image has that id)"
        )
