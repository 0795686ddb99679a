"""Kafka cluster ids: pure, no broker needed."""

from __future__ import annotations

import base64
import re

from infra.kafka import new_cluster_id


def test_a_cluster_id_is_22_url_safe_characters_and_never_starts_with_a_dash() -> None:
    # 0xF8 0x00 ... encodes to "-A..." in URL-safe base64: the tools' parser takes it for
    # an option. The id must be drawn again, not passed on.
    draws = iter([b"\xf8" + bytes(15), b"\x01" * 16])
    cluster_id = new_cluster_id(lambda: next(draws))
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")
    assert cluster_id == base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", cluster_id)


def test_random_cluster_ids_differ() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert not any(i.startswith("-") for i in ids)
