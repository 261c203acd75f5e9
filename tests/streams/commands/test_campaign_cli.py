"""``leadflow campaign ...`` run as a subprocess against the session database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from streams.campaign import load_campaign
from streams.commands.campaign import dump_yaml
from streams.settings import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"


def leadflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )


def example_copy(tmp_path: Path) -> tuple[str, Path]:
    """The example file under a unique campaign id."""
    campaign_id = f"cli-{uuid.uuid4().hex[:10]}"
    text = EXAMPLE.read_text().replace("id: hvac-spring-tuneup ", f"id: {campaign_id} ", 1)
    assert campaign_id in text
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return campaign_id, path


def test_create_list_show_and_status_changes(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    campaign_id, path = example_copy(tmp_path)
    env = subprocess_env

    created = leadflow(env, "campaign", "create", str(path))
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(f"created {campaign_id} (")
    assert "sms+0s, voice+1d, sms+2d, email+1w" in created.stdout

    again = leadflow(env, "campaign", "create", str(path))
    assert again.returncode == 2
    assert f"campaign {campaign_id} already exists" in again.stderr

    listed = leadflow(env, "campaign", "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == ["ID", "STATUS", "TOUCHES", "CREATED", "NAME"]
    row = next(line for line in listed.stdout.splitlines() if line.startswith(campaign_id))
    assert row.split()[1:3] == ["active", "4"]

    shown = leadflow(env, "campaign", "show", campaign_id)
    assert shown.returncode == 0
    assert shown.stdout.startswith("# status: active\n")
    shown_file = tmp_path / "shown.yaml"
    shown_file.write_text(shown.stdout)
    assert load_campaign(shown_file) == load_campaign(path)  # show prints a file create accepts

    as_json = json.loads(leadflow(env, "campaign", "show", campaign_id, "--json").stdout)
    assert as_json["status"] == "active"
    assert as_json["config"] == load_campaign(path).to_dict()

    steps = [
        (("pause",), 0, "active -> paused"),
        (("pause",), 2, "already paused"),
        (("resume",), 0, "paused -> active"),
        (("cancel",), 0, "active -> cancelled"),
        (("resume",), 2, "cancelled is final"),
    ]
    for args, code, text in steps:
        result = leadflow(env, "campaign", *args, campaign_id)
        assert result.returncode == code, (args, result.stderr)
        assert text in (result.stdout if code == 0 else result.stderr)
        if code:
            assert result.stderr.startswith("leadflow: error: ")
            assert "Traceback" not in result.stderr

    cancelled = leadflow(env, "campaign", "list", "--status", "cancelled")
    assert campaign_id in cancelled.stdout


def test_invalid_file_prints_every_problem_and_stores_nothing(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    campaign_id, path = example_copy(tmp_path)
    text = path.read_text()
    for old, new in [
        ("delay: 24h\n    persona: gianna", "delay: 24x\n    persona: gianna"),
        ("persona: cathy\n    template", "persona: kathy\n    template"),
        ('rate: "100/60"\n    daily_cap: 20000', 'rate: "100/60"\n    daily_cap: -1'),
        ("budget_cost_units: 2500", "budget_cost_units: 2500\nbudget: 3"),
        ("  days: [mon", "  days: [mun"),
    ]:
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text)

    result = leadflow(subprocess_env, "campaign", "create", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"leadflow: error: {path}: 5 problems"
    problems = [line.strip() for line in lines[1:]]
    assert [p.split(":")[0] for p in problems] == [
        "send_window.days[1]",
        "channels.sms.daily_cap",
        "budget",
        "sequence[2].delay",
        "sequence[3].persona",
    ]
    assert all(re.search(r"\(line \d+\)$", p) for p in problems)
    assert "'kathy' is not a persona" in result.stderr

    shown = leadflow(subprocess_env, "campaign", "show", campaign_id)
    assert shown.returncode == 2
    assert f"no campaign with id '{campaign_id}'" in shown.stderr


def test_validate_needs_no_database(tmp_path: Path) -> None:
    env = {**os.environ, "LEADFLOW_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    ok = leadflow(env, "campaign", "validate", str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert "campaign hvac-spring-tuneup is valid (4 touches)" in ok.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nname: [unclosed\n")
    result = leadflow(env, "campaign", "validate", str(bad))
    assert result.returncode == 2
    assert re.search(r"line \d+, column \d+: YAML syntax error", result.stderr)


def test_yaml_dump_keeps_templates_readable_and_reparses(tmp_path: Path) -> None:
    campaign = load_campaign(EXAMPLE)
    text = dump_yaml(campaign.to_dict())
    assert re.search(r"\n    template: \|-\n      Hi \{first_name\},\n\n", text)  # a block
    assert "sms_from: '+16145550142'" in text  # still a string, not a number
    path = tmp_path / "dumped.yaml"
    path.write_text(text)
    assert load_campaign(path) == campaign
