"""``leadflow campaign archive|purge`` on the session database and broker."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import uuid
from typing import Any

import psycopg
from click.testing import CliRunner, Result
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from sinks.campaigns import CampaignStatus, CampaignStore
from streams.campaign import load_campaign
from streams.codec import AvroCodec
from streams.commands.campaign import campaign, changelog_keys
from streams.settings import REPO_ROOT, Settings
from streams.tail import lead_state_changelog_topic

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"
STATE = AvroCodec("leadflow.LeadState")


def new_campaign(dsn: str, states: tuple[str, ...] = ("completed", "replied")) -> str:
    """A stored campaign with one lead per state (and a timeline row each) and an opt-out."""
    campaign_id = f"ret-{uuid.uuid4().hex[:10]}"
    CampaignStore(dsn).create(dataclasses.replace(load_campaign(EXAMPLE), id=campaign_id))
    with psycopg.connect(dsn) as conn:
        for i, state in enumerate(states):
            conn.execute(
                "INSERT INTO leads (campaign_id, lead_id, state) VALUES (%s, %s, %s)",
                (campaign_id, f"lead-{i}", state),
            )
            conn.execute(
                "INSERT INTO lead_transitions (campaign_id, lead_id, version, to_state, "
                "occurred_at) VALUES (%s, %s, 1, %s, now())",
                (campaign_id, f"lead-{i}", state),
            )
        conn.execute(
            "INSERT INTO opt_outs (identity_key, source, campaign_id, lead_id) "
            "VALUES (%s, 'sms_stop', %s, 'lead-1')",
            (f"ident-{campaign_id}", campaign_id),
        )
    return campaign_id


def rows(dsn: str, table: str, campaign_id: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {table} WHERE campaign_id = %s", (campaign_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def state(campaign_id: str, lead_id: str) -> bytes:
    return STATE.encode(
        {
            "campaign_id": campaign_id,
            "lead_id": lead_id,
            "state": "completed",
            "touch": 4,
            "updated_at": 0,
            "version": 7,
        }
    )


def invoke(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(campaign, list(args), obj=settings)


def test_archive_then_purge_tombstones_the_changelog(services: Any, dsn: str) -> None:
    base: Settings = services.settings
    settings = dataclasses.replace(
        base, topic_prefix=f"{base.topic_prefix}ret{uuid.uuid4().hex[:6]}-"
    )
    campaign_id = new_campaign(dsn)
    other_id = new_campaign(dsn)
    topic = lead_state_changelog_topic(settings)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    admin.create_topics(
        [
            NewTopic(
                topic, num_partitions=2, replication_factor=1, config={"cleanup.policy": "compact"}
            )
        ]
    )[topic].result()
    mine = [f"{campaign_id}\x1flead-{i}".encode() for i in range(3)]
    theirs = f"{other_id}\x1flead-0".encode()
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for partition, key, value in [
        (0, mine[0], state(campaign_id, "lead-0")),
        (1, mine[1], state(campaign_id, "lead-1")),
        (1, mine[1], state(campaign_id, "lead-1")),
        (0, mine[2], state(campaign_id, "lead-2")),
        (0, mine[2], None),  # already forgotten
        (1, theirs, state(other_id, "lead-0")),
    ]:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(15) == 0
    assert changelog_keys(settings, campaign_id) == {(mine[0], 0), (mine[1], 1)}

    dry_archive = invoke(settings, "archive", campaign_id, "--dry-run")
    assert dry_archive.exit_code == 0, dry_archive.output
    assert "can be archived (active -> archived)" in dry_archive.output
    assert CampaignStore(dsn).get(campaign_id).status is CampaignStatus.ACTIVE
    archived = invoke(settings, "archive", campaign_id)
    assert archived.exit_code == 0, archived.output
    assert f"campaign {campaign_id}: active -> archived" in archived.output

    dry = invoke(settings, "purge", campaign_id)
    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert lines[0] == f"campaign {campaign_id} (archived): would delete"
    assert [line.split() for line in lines if line.split()[:1] == ["leads"]] == [["leads", "2"]]
    assert ["lead_transitions", "2"] in [line.split() for line in lines]
    assert ["campaigns", "1"] in [line.split() for line in lines]
    assert ["total", "5"] in [line.split() for line in lines]
    assert "kept: opt_outs 1 rows (compliance records survive a purge)" in lines
    assert f"changelog {topic}: 2 keys would be tombstoned" in lines
    assert rows(dsn, "leads", campaign_id) == 2  # a dry run deletes nothing
    assert changelog_keys(settings, campaign_id) == {(mine[0], 0), (mine[1], 1)}

    done = invoke(settings, "purge", campaign_id, "--yes")
    assert done.exit_code == 0, done.output
    assert "deleted" in done.output.splitlines()[0]
    assert "2 keys tombstoned; a running worker keeps these leads in memory" in done.output
    assert changelog_keys(settings, campaign_id) == set()
    assert changelog_keys(settings, other_id) == {(theirs, 1)}
    assert rows(dsn, "leads", campaign_id) == 0
    assert rows(dsn, "lead_transitions", campaign_id) == 0
    assert rows(dsn, "campaigns", campaign_id) == 0
    assert rows(dsn, "opt_outs", campaign_id) == 1  # opt-outs survive a purge
    assert rows(dsn, "leads", other_id) == 2


def test_force_purges_a_cancelled_campaign_without_a_changelog(services: Any, dsn: str) -> None:
    base: Settings = services.settings
    settings = dataclasses.replace(
        base, topic_prefix=f"{base.topic_prefix}nochg{uuid.uuid4().hex[:6]}-"
    )
    campaign_id = new_campaign(dsn, ("in_sequence",))
    CampaignStore(dsn).cancel(campaign_id)
    refused = invoke(settings, "purge", campaign_id, "--yes")
    assert "add --force" in str(refused.exception)
    assert rows(dsn, "leads", campaign_id) == 1
    done = invoke(settings, "purge", campaign_id, "--yes", "--force")
    assert done.exit_code == 0, done.output
    assert f"campaign {campaign_id} (cancelled): deleted" in done.output
    assert "0 keys tombstoned" in done.output
    assert rows(dsn, "leads", campaign_id) == 0


def leadflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "campaign", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )


def test_refusals_exit_2_with_one_line(subprocess_env: dict[str, str], dsn: str) -> None:
    campaign_id = new_campaign(dsn, ("completed", "in_sequence"))
    archive = leadflow(subprocess_env, "archive", campaign_id)
    assert archive.returncode == 2
    assert archive.stderr.startswith(f"leadflow: error: cannot archive campaign {campaign_id}")
    assert "1 of 2 leads not in a terminal state" in archive.stderr
    purge = leadflow(subprocess_env, "purge", campaign_id, "--yes")
    assert purge.returncode == 2
    assert "cannot purge campaign" in purge.stderr and "archive it first" in purge.stderr
    assert "Traceback" not in purge.stderr + archive.stderr
    both = leadflow(subprocess_env, "purge", campaign_id, "--yes", "--dry-run")
    assert both.returncode == 2 and "not both" in both.stderr
    assert rows(dsn, "leads", campaign_id) == 2
    assert CampaignStore(dsn).get(campaign_id).status is CampaignStatus.ACTIVE
