"""Analysis of a blind best/worst study: the paper's Table 6.

Each vote gives every shown model +1 (chosen best), -1 (chosen worst) or 0. A cell of the table
is a model's mean score over the votes of a subset (and over all votes in the ``All`` row).
Significance is a Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) of each model against a
reference model over **paired per-item scores**: an item's score for a model is its mean over
the annotators who voted on that item, so an item counts once however many people saw it
(votes of one item are not independent). Gaps with p < ``alpha`` are marked with a dagger, as in
the paper.

``worldboot evaluate human STUDY`` (:mod:`worldboot.evaluate.human`) calls :func:`analyse_votes`
and prints :func:`format_markdown`.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldboot.errors import ConfigError, DataError
from worldboot.stats import wilcoxon_paired
from worldboot.study.spec import Study, default_db_path, load_study
from worldboot.study.votes import Vote, VoteStore

ALL = "All"
DAGGER = "\u2020"


@dataclass
class Cell:
    """One model on one subset.

    Attributes:
        mean: Mean of +1/-1/0 over the votes (NaN without votes).
        n_votes: Votes that showed the model.
        n_items: Items with a score for both this model and the reference (the test's pairs).
        statistic: Wilcoxon statistic (the smaller rank sum); None for the reference or no pairs.
        p_value: Two-sided p-value; None for the reference or no pairs; 1.0 when every paired
            difference is zero (no evidence of a gap).
        significant: ``p_value < alpha``.
    """

    mean: float
    n_votes: int
    n_items: int = 0
    statistic: float | None = None
    p_value: float | None = None
    significant: bool = False


@dataclass
class HumanEvalTable:
    """Mean scores per subset and model, with significance against a reference.

    Attributes:
        study: The study's name.
        reference: The model the others are tested against.
        models: Column order (the study's).
        rows: Subsets in the study's order, then ``All``.
        cells: ``(row, model) -> Cell``.
        alpha: Significance level.
        n_votes: Votes used.
        n_annotators: Distinct annotators among them.
        skipped_votes: Votes on items no longer in the study (ignored).
        foreign_votes: Votes on the study's items that name a model not in the study (a model
            renamed or removed since): skipped, never counted for any model.
        foreign_models: Those model names, sorted.
        unreadable_votes: Rows of the database that are not a vote (ignored).
        problems: The study's items left out (a missing image...), as ``file:line: reason``.
    """

    study: str
    reference: str
    models: list[str]
    rows: list[str]
    cells: dict[tuple[str, str], Cell]
    alpha: float
    n_votes: int
    n_annotators: int
    skipped_votes: int = 0
    foreign_votes: int = 0
    foreign_models: list[str] = field(default_factory=list)
    unreadable_votes: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data (NaN means become None)."""

        def clean(x: float | None) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

        return {
            "study": self.study,
            "reference": self.reference,
            "alpha": self.alpha,
            "n_votes": self.n_votes,
            "n_annotators": self.n_annotators,
            "skipped_votes": self.skipped_votes,
            "foreign_votes": self.foreign_votes,
            "foreign_models": self.foreign_models,
            "unreadable_votes": self.unreadable_votes,
            "problems": self.problems,
            "rows": [
                {
                    "subset": row,
                    **{
                        model: {
                            "mean": clean(c.mean),
                            "n_votes": c.n_votes,
                            "n_items": c.n_items,
                            "statistic": clean(c.statistic),
                            "p_value": clean(c.p_value),
                            "significant": c.significant,
                        }
                        for model in self.models
                        for c in [self.cells[(row, model)]]
                    },
                }
                for row in self.rows
            ],
        }


def _per_item(votes: list[Vote]) -> dict[str, dict[str, float]]:
    """item -> model -> mean score over the annotators who voted on the item."""
    sums: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for v in votes:
        for model in v.shown:
            sums[v.item_id][model].append(v.score(model))
    return {item: {m: sum(s) / len(s) for m, s in per.items()} for item, per in sums.items()}


def split_foreign(votes: list[Vote], models: list[str]) -> tuple[list[Vote], list[str]]:
    """The votes whose shown, best and worst models are all models of the study, and the sorted
    names of the others' models that are not (a vote cast before a model was renamed would
    count for no model, and its +1/-1 would be lost to the others' means)."""
    known = set(models)
    kept, foreign = [], set()
    for v in votes:
        unknown = {v.best, v.worst, *v.shown} - known
        if unknown:
            foreign |= unknown
        else:
            kept.append(v)
    return kept, sorted(foreign)


def analyse_votes(
    db_path: str | os.PathLike[str] | None,
    study: Study | str | os.PathLike[str],
    reference: str | None = None,
    alpha: float = 0.05,
    zero_method: str = "wilcox",
) -> HumanEvalTable:
    """Build the human-evaluation table from a votes database.

    Args:
        db_path: The SQLite votes file; None: the study's default (``<study>.votes.sqlite``).
        study: A loaded :class:`~worldboot.study.spec.Study` or the path of its YAML.
        reference: Model to test the others against; default the study's ``reference``.
        alpha: Significance level for the dagger.
        zero_method: scipy's handling of zero differences (``wilcox`` drops them).

    Returns:
        The table.

    Raises:
        ConfigError: For an unknown reference model.
        DataError: For a missing database or one without votes.
    """
    if not isinstance(study, Study):
        study = load_study(study)
    if db_path is None:
        if study.path is None:
            raise DataError("give the votes database (--db)")
        db_path = default_db_path(study.path)
    reference = reference or study.reference
    if reference not in study.models:
        raise ConfigError(f"reference {reference!r} is not a model of the study: {study.models}")
    store = VoteStore(Path(db_path), study.name, create=False)
    all_votes = store.votes()
    on_items = [v for v in all_votes if study.item(v.item_id) is not None]
    votes, foreign = split_foreign(on_items, study.models)
    if not votes:
        why = f" ({len(on_items)} name models not in it: {', '.join(foreign)})" if on_items else ""
        raise DataError(f"{db_path}: no votes on the items of study {study.name!r}{why}")
    per_item = _per_item(votes)

    rows = [*study.subsets, ALL]  # a subset without votes keeps its row, with dashes
    cells: dict[tuple[str, str], Cell] = {}
    for row in rows:
        row_votes = [v for v in votes if row == ALL or study.item(v.item_id).subset == row]
        row_items = list(dict.fromkeys(v.item_id for v in row_votes))
        for model in study.models:
            scores = [v.score(model) for v in row_votes if model in v.shown]
            cell = Cell(mean=sum(scores) / len(scores) if scores else float("nan"), n_votes=len(scores))
            if model != reference:
                pairs = [
                    (per_item[i][model], per_item[i][reference])
                    for i in row_items
                    if model in per_item[i] and reference in per_item[i]
                ]
                cell.n_items = len(pairs)
                cell.statistic, cell.p_value = wilcoxon_paired(
                    [a for a, _ in pairs], [b for _, b in pairs], zero_method
                )
                cell.significant = cell.p_value is not None and cell.p_value < alpha
            else:
                cell.n_items = sum(1 for i in row_items if model in per_item[i])
            cells[(row, model)] = cell
    return HumanEvalTable(
        study=study.name,
        reference=reference,
        models=list(study.models),
        rows=rows,
        cells=cells,
        alpha=alpha,
        n_votes=len(votes),
        n_annotators=len({v.annotator for v in votes}),
        skipped_votes=len(all_votes) - len(on_items),
        foreign_votes=len(on_items) - len(votes),
        foreign_models=foreign,
        unreadable_votes=store.unreadable,
        problems=[str(p) for p in study.problems],
    )


def format_markdown(table: HumanEvalTable, digits: int = 2) -> str:
    """The table as Markdown: subsets as rows, models as columns, a dagger on significant gaps."""
    header = [f"{m} (ref.)" if m == table.reference else m for m in table.models]
    lines = [
        "| Subset | " + " | ".join(header) + " | Votes |",
        "|---|" + "---:|" * (len(table.models) + 1),
    ]
    for row in table.rows:
        cells = []
        for model in table.models:
            c = table.cells[(row, model)]
            text = "–" if math.isnan(c.mean) else f"{c.mean:.{digits}f}"
            cells.append(text + (DAGGER if c.significant else ""))
        name = f"**{row}**" if row == ALL else row
        n_votes = max(table.cells[(row, m)].n_votes for m in table.models)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {n_votes} |")
    lines.append("")
    lines.append(
        f"{DAGGER} gap to {table.reference} significant (two-sided Wilcoxon signed-rank test over paired "
        f"per-item scores, p < {table.alpha:g}). Scores: +1 best, -1 worst, 0 otherwise; "
        f"{table.n_votes} votes by {table.n_annotators} annotator(s) on study {table.study!r}."
    )
    if table.skipped_votes:
        lines.append(f"{table.skipped_votes} vote(s) on items no longer in the study were ignored.")
    if table.foreign_votes:
        lines.append(
            f"{table.foreign_votes} vote(s) naming models not in the study ({', '.join(table.foreign_models)}; renamed "
            "or removed?) were skipped and counted for no model."
        )
    if table.unreadable_votes:
        lines.append(f"{table.unreadable_votes} row(s) of the database are not a vote (edited by hand?) and were ignored.")
    for problem in table.problems:
        lines.append(f"Left out of the study: {problem}")
    return "\n".join(lines) + "\n"
