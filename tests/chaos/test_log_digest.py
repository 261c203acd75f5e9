"""The digest of worker warnings that a failed scenario's message carries."""

from __future__ import annotations

from pathlib import Path

from chaos.log_digest import digest, digest_lines

_W = "[2026-11-27 10:23:{s},086] [3764] [{level}] {msg}"


def _line(second: int, msg: str, level: str = "WARNING") -> str:
    return _W.format(s=f"{second:02d}", level=level, msg=msg)


def test_one_message_with_different_numbers_is_one_shape_with_its_span() -> None:
    shapes = digest_lines(
        [
            _line(46, "stage send: holding 6 events, retrying in 0.2 s"),
            "  a continuation line of a stack dump",
            _line(47, "stage send: holding 12 events, retrying in 0.4 s"),
            _line(50, "stage send: holding 6 events, retrying in 3.2 s"),
            _line(48, "worker crashed", level="ERROR"),
            _line(49, "just information", level="INFO"),
        ]
    )
    assert [s.line() for s in shapes] == [
        "3x 10:23:46-10:23:50 WARNING stage send: holding # events, retrying in #.# s",
        "1x 10:23:48 ERROR worker crashed",
    ]


def test_producer_buffer_noise_is_left_out() -> None:
    assert digest_lines([_line(1, "producer buffer full size 1002")]) == []


def test_shapes_across_workers_keep_the_earliest_and_latest_time(tmp_path: Path) -> None:
    (tmp_path / "worker0.log").write_text(_line(30, "sweep failed") + "\n")
    (tmp_path / "worker1.log").write_text(
        _line(10, "sweep failed") + "\n" + _line(20, "sweep failed") + "\n"
    )
    assert digest(tmp_path.glob("*.log")) == ["3x 10:23:10-10:23:30 WARNING sweep failed"]


def test_beyond_the_limit_the_most_frequent_are_kept_in_time_order(tmp_path: Path) -> None:
    lines = [_line(10, "rare a"), _line(11, "often b"), _line(12, "often b"), _line(13, "rare c")]
    lines += [_line(14, "often d"), _line(15, "often d")]
    (tmp_path / "worker0.log").write_text("\n".join(lines))
    assert digest([tmp_path / "worker0.log"], limit=2) == [
        "2x 10:23:11-10:23:12 WARNING often b",
        "2x 10:23:14-10:23:15 WARNING often d",
        "... and 2 rarer warning shapes",
    ]


def test_a_missing_log_gives_an_empty_digest(tmp_path: Path) -> None:
    assert digest([tmp_path / "worker9.log"]) == []


def test_hex_ids_fold_into_one_shape() -> None:
    shapes = digest_lines(
        [
            _line(1, "webhook evt_45be20cd34a51809c688: database_unavailable"),
            _line(2, "webhook evt_9b592595a0aaade44330: database_unavailable"),
        ]
    )
    assert [s.line() for s in shapes] == [
        "2x 10:23:01-10:23:02 WARNING webhook evt_#: database_unavailable"
    ]
