import pytest

from sandbox.durations import parse_duration_ms

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("30s", 30_000),
        ("5m", 300_000),
        ("6h", 21_600_000),
        ("1d", 86_400_000),
        ("1h30m", 5_400_000),
        ("1.5s", 1_500),
        ("10", 10_000),
        ("0.25", 250),
        (" 2m ", 120_000),
    ],
)
def test_parses(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "abc", "5 minutes", "m5", "5x", "1h-30m", "s"])
def test_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(text)
