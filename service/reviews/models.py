"""Human review of an evaluation's samples: queues, their blind items, and reviewers' ratings with every revision.

A queue belongs to one evaluation. Its items show reviewers neutral labels only; which candidate and sample stand
behind each label is kept on the item (``sides``) and never leaves the server except in the export. A reviewer has one
current rating per item (``review_ratings``, unique by item and reviewer); every submission, the first included, is
also appended to ``review_rating_revisions``, so a second submission never loses the first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.modelbase import Timestamps, json_field, ts_field


class ReviewQueue(Timestamps, SQLModel, table=True):
    __tablename__ = "review_queues"

    id: str = Field(default_factory=lambda: new_id("review_queue"), primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="projects.id", index=True, max_length=40, ondelete="CASCADE")
    evaluation_id: str = Field(foreign_key="evaluations.id", index=True, max_length=40, ondelete="CASCADE")
    status: str = Field(max_length=16, index=True)
    mode: str = Field(max_length=16)
    # The request as validated (ReviewQueueCreate), plus what sampling decided (strata and their sizes).
    config: dict[str, Any] = json_field()
    n_items: int = 0
    reviewers_per_item: int = 1
    completed_at: datetime | None = ts_field(nullable=True)


class ReviewItem(SQLModel, table=True):
    __tablename__ = "review_items"
    __table_args__ = (sa.UniqueConstraint("queue_id", "position", name="uq_review_items_position"),)

    id: str = Field(default_factory=lambda: new_id("review_item"), primary_key=True, max_length=40)
    queue_id: str = Field(foreign_key="review_queues.id", index=True, max_length=40, ondelete="CASCADE")
    # Shuffled order (seeded): reviewers see items in this order, never grouped by candidate or stratum.
    position: int
    example_key: str = Field(max_length=32)
    stratum: str = Field(max_length=200)
    # Hidden mapping, one entry per shown response: {"label", "candidate", "sample_id"}.
    sides: list[dict[str, Any]] = json_field(list)
    # Current ratings held; the queue is complete when every item has reviewers_per_item of them.
    n_ratings: int = 0
    created_at: datetime = ts_field(default_now=True)


class ReviewRating(SQLModel, table=True):
    __tablename__ = "review_ratings"
    __table_args__ = (sa.UniqueConstraint("item_id", "reviewer", name="uq_review_ratings_reviewer"),)

    id: str = Field(default_factory=lambda: new_id("review_rating"), primary_key=True, max_length=40)
    queue_id: str = Field(foreign_key="review_queues.id", index=True, max_length=40, ondelete="CASCADE")
    item_id: str = Field(foreign_key="review_items.id", index=True, max_length=40, ondelete="CASCADE")
    reviewer: str = Field(max_length=100)
    passed: bool | None = None
    score: int | None = None
    # Pairwise: the label preferred ("A" or "B"), or "tie".
    preference: str | None = Field(default=None, max_length=8)
    comment: str | None = None
    revision: int = 1
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class ReviewRatingRevision(SQLModel, table=True):
    __tablename__ = "review_rating_revisions"
    __table_args__ = (sa.UniqueConstraint("rating_id", "revision", name="uq_review_rating_revisions_revision"),)

    id: str = Field(default_factory=lambda: new_id("review_rating_revision"), primary_key=True, max_length=40)
    rating_id: str = Field(foreign_key="review_ratings.id", index=True, max_length=40, ondelete="CASCADE")
    queue_id: str = Field(foreign_key="review_queues.id", index=True, max_length=40, ondelete="CASCADE")
    item_id: str = Field(max_length=40)
    reviewer: str = Field(max_length=100)
    revision: int
    passed: bool | None = None
    score: int | None = None
    preference: str | None = Field(default=None, max_length=8)
    comment: str | None = None
    created_at: datetime = ts_field(default_now=True)
