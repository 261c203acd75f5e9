"""``leadflow schemas``: list, check, encode and decode."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli import cli, main
from streams.schemas import SchemaRegistry, default_registry
from streams.settings import REPO_ROOT

SCHEMAS_DIR = REPO_ROOT / "schemas"
LEAD = {
    "campaign_id": "q3",
    "lead_id": "L-1",
    "email": "jane@example.com",
    "attributes": {"list": "may"},
    "event_time": "2024-05-01T12:00:00.250+00:00",
    "source": "csv",
    "source_line": 7,
}


def run(*args: str, stdin: str | bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["schemas", "--dir", str(SCHEMAS_DIR), *args], input=stdin)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Through the console-script entry point, which turns LeadflowError into one line."""
    with pytest.raises(SystemExit) as caught:
        main(["schemas", "--dir", str(SCHEMAS_DIR), *args])
    out, err = capsys.readouterr()
    assert isinstance(caught.value.code, int)
    return caught.value.code, out, err


def test_list_shows_every_version_with_its_fingerprint() -> None:
    code, out, _ = run("list")
    assert code == 0
    lines = out.splitlines()
    registry = SchemaRegistry.from_dir(SCHEMAS_DIR)
    assert len(lines) == len(registry)
    for line, version in zip(lines, registry, strict=True):
        assert line.split() == [
            version.full_name,
            f"v{version.version}",
            version.fingerprint_hex,
            str(version.path),
        ]


def test_check_passes_on_the_real_schemas() -> None:
    code, out, err = run("check")
    assert (code, err) == (0, "")
    registry = default_registry()
    assert out.startswith(f"ok: {len(registry)} versions of {len(registry.names())} records")


def test_check_fails_on_an_incompatible_change(tmp_path: Path) -> None:
    def schema(version: int, fields: list[dict[str, str]]) -> str:
        return json.dumps(
            {
                "type": "record",
                "name": "RawLead",
                "namespace": "leadflow",
                "version": version,
                "doc": "d",
                "fields": fields,
            }
        )

    (tmp_path / "raw_lead.v1.avsc").write_text(schema(1, [{"name": "a", "type": "string"}]))
    (tmp_path / "raw_lead.v2.avsc").write_text(
        schema(2, [{"name": "a", "type": "string", "doc": "d"}, {"name": "b", "type": "int"}])
    )
    result = CliRunner().invoke(cli, ["schemas", "--dir", str(tmp_path), "check"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert (
        "problem: leadflow.RawLead v1 -> v2: leadflow.RawLead.b: not written by the writer "
        "and has no default" in result.stderr
    )
    assert "problem: raw_lead.v1.avsc: field leadflow.RawLead.a has no doc" in result.stderr


def test_encode_then_decode_round_trips() -> None:
    code, hex_line, _ = run("encode", "RawLead", "--hex", stdin=json.dumps(LEAD))
    assert code == 0
    assert hex_line.startswith(
        "c301" + SchemaRegistry.from_dir(SCHEMAS_DIR).current("leadflow.RawLead").fingerprint_hex
    )
    code, out, _ = run("decode", "--hex", "-", stdin=hex_line)
    assert code == 0
    assert out.count("\n") == 1
    assert json.loads(out) == {
        **LEAD,
        "first_name": None,
        "last_name": None,
        "phone": None,
        "company": None,
        "title": None,
        "timezone": None,
        "country": None,
        "state": None,
    }


def test_binary_payload_round_trips_byte_for_byte(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["schemas", "--dir", str(SCHEMAS_DIR), "encode", "leadflow.RawLead"],
        input=json.dumps(LEAD),
    )
    assert result.exit_code == 0
    payload = result.stdout_bytes
    assert payload[:2] == b"\xc3\x01"
    path = tmp_path / "lead.bin"
    path.write_bytes(payload)
    code, line, _ = run("decode", str(path))
    assert code == 0
    again = CliRunner().invoke(
        cli, ["schemas", "--dir", str(SCHEMAS_DIR), "encode", "RawLead"], input=line
    )
    assert again.stdout_bytes == payload


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"lead_id": "L-1"}', "payload is not Avro single-object encoded ({path}): starts with"),
        (
            b"\xc3\x01" + bytes(8) + b"\x02",
            "unknown writer schema fingerprint ({path}): 0000000000000000",
        ),
        (b"\xc3\x01\x01", "truncated Avro payload ({path}): 3-byte payload ends inside"),
    ],
)
def test_bad_payload_prints_one_line_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    code, out, err = run_main(["decode", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("leadflow: error: " + message.format(path=path))
    assert "Traceback" not in err


def test_bad_record_prints_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = {**LEAD, "source_line": "seven"}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(bad).encode())))
    code, out, err = run_main(["encode", "RawLead", "--hex"], capsys)
    assert (code, out) == (2, "")
    assert err == (
        "leadflow: error: record does not match its schema (stdin): field source_line of "
        "leadflow.RawLead v2 expects null or long, got str\n"
    )


def test_bad_json_input_is_a_usage_error() -> None:
    code, _, err = run("encode", "RawLead", stdin="{not json")
    assert code == 1
    assert "Error: stdin is not JSON" in err
    code, _, err = run("decode", "--hex", "-", stdin="zz")
    assert code == 1
    assert "Error: stdin is not hex text" in err


def test_real_command_line_shows_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "schemas", "decode", "-"],
        input=b"definitely not avro",
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.decode() == (
        "leadflow: error: payload is not Avro single-object encoded (stdin): "
        "starts with 64 65 66 69, expected c3 01\n"
    )
