"""``leadflow schemas``: list and check the Avro schemas, encode and decode payloads.

JSON on both sides uses the codec's JSON form (see
:func:`streams.codec.record_to_json`): ``bytes`` fields are standard base64
and ``timestamp-millis`` fields ISO-8601 strings (``encode`` also takes epoch
milliseconds), so ``leadflow schemas decode x.bin | leadflow schemas encode
leadflow.RawLead`` gives the payload back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO

import click

from streams.schemas import NAMESPACE, SchemaRegistry, default_registry

__all__ = ["schemas"]


def _registry(ctx: click.Context) -> SchemaRegistry:
    folder: Path | None = ctx.obj
    return default_registry() if folder is None else SchemaRegistry.from_dir(folder)


@click.group("schemas")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    help="Schema folder to use instead of LEADFLOW_SCHEMAS_DIR.",
)
@click.pass_context
def schemas(ctx: click.Context, folder: Path | None) -> None:
    """Avro schemas (schemas/*.avsc) and single-object payloads."""
    ctx.obj = folder


@schemas.command("list")
@click.pass_context
def list_schemas(ctx: click.Context) -> None:
    """Every schema version: name, version, fingerprint (wire order) and file."""
    versions = list(_registry(ctx))
    width = max(len(v.full_name) for v in versions)
    for v in versions:
        click.echo(
            f"{v.full_name:<{width}}  {'v' + str(v.version):<4}  {v.fingerprint_hex}  {v.path}"
        )


@schemas.command("check")
@click.pass_context
def check(ctx: click.Context) -> None:
    """Load every schema, prove older versions are readable, check the house rules.

    Exits with status 1 when there is a problem.
    """
    registry = _registry(ctx)
    problems = [*registry.check_compatibility(), *registry.lint()]
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        ctx.exit(1)
    click.echo(
        f"ok: {len(registry)} versions of {len(registry.names())} records in "
        f"{registry.source}; every older version is readable by the current one"
    )


@schemas.command("encode")
@click.argument("name")
@click.option("--hex", "as_hex", is_flag=True, help="Print the payload as hex text.")
@click.pass_context
def encode(ctx: click.Context, name: str, as_hex: bool) -> None:
    """Encode one JSON object from stdin as a NAME payload (e.g. leadflow.RawLead).

    Writes the payload's bytes to stdout, or one hex line with --hex.
    """
    from streams.codec import AvroCodec, record_from_json  # imports Faust: only when used

    full_name = name if "." in name else f"{NAMESPACE}.{name}"
    codec = AvroCodec(full_name, _registry(ctx), subject="stdin")
    try:
        data = json.loads(click.get_text_stream("stdin").read())
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"stdin is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise click.ClickException(f"stdin must hold a JSON object, not {type(data).__name__}")
    payload = codec.encode(record_from_json(data, codec.schema, subject="stdin"))
    if as_hex:
        click.echo(payload.hex())
    else:
        click.get_binary_stream("stdout").write(payload)


@schemas.command("decode")
@click.argument("source", type=click.File("rb"), default="-")
@click.option("--hex", "as_hex", is_flag=True, help="SOURCE holds hex text, not bytes.")
@click.pass_context
def decode(ctx: click.Context, source: BinaryIO, as_hex: bool) -> None:
    """Decode one payload of any known schema from SOURCE (a file, or - for stdin).

    Prints the record as one JSON line, resolved to the current version of
    its record type.
    """
    from streams.codec import decode_payload_any, record_to_json  # imports Faust

    name = str(getattr(source, "name", "-"))
    subject = "stdin" if name in {"-", "<stdin>"} else name
    payload = source.read()
    if as_hex:
        try:
            payload = bytes.fromhex(payload.decode("ascii", "replace"))
        except ValueError as exc:
            raise click.ClickException(f"{subject} is not hex text: {exc}") from exc
    decoded = decode_payload_any(payload, _registry(ctx), subject=subject)
    click.echo(record_to_json(decoded.record))
