"""The `meta` of every paged list in the API: the page asked for and how many pages and results
there are. One rule for the page count, whatever the list.

The models carry no docstring: it would become a description in the OpenAPI document."""

from __future__ import annotations

import math
from typing import Self

from pydantic import BaseModel


class PaginationMeta(BaseModel):
    page_number: int
    page_size: int
    total_pages: int
    total_results: int

    @classmethod
    def of(cls, page_number: int, page_size: int, total_results: int) -> Self:
        return cls(
            page_number=page_number,
            page_size=page_size,
            total_pages=math.ceil(total_results / page_size),
            total_results=total_results,
        )


# the same meta under the name Telnyx's spec gives it on webhook deliveries (the OpenAPI
# component keeps that name)
class PaginationMetaSimple(PaginationMeta):
    pass
