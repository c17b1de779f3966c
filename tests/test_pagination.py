from __future__ import annotations

from callvault.pagination import PaginationMeta, PaginationMetaSimple


def test_the_page_count_rounds_up() -> None:
    meta = PaginationMeta.of(2, 20, 41)
    assert meta.model_dump() == {
        "page_number": 2,
        "page_size": 20,
        "total_pages": 3,
        "total_results": 41,
    }
    assert PaginationMeta.of(1, 20, 0).total_pages == 0
    assert PaginationMeta.of(1, 20, 20).total_pages == 1


def test_the_deliveries_meta_is_the_same_rule_under_its_own_name() -> None:
    meta = PaginationMetaSimple.of(1, 10, 11)
    assert isinstance(meta, PaginationMetaSimple)
    assert meta.total_pages == 2
    assert PaginationMetaSimple.model_json_schema()["title"] == "PaginationMetaSimple"
