"""``leadflow worker`` waits a bounded, configured time for Kafka, saying so, then fails clearly."""

from __future__ import annotations

import os
import subprocess
import sys

from streams.infra.process import free_port


def test_worker_waits_for_an_unreachable_kafka_then_exits_2() -> None:
    env = {
        **os.environ,
        "LEADFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "LEADFLOW_KAFKA_START_WAIT_S": "3",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "leadflow: waiting for Kafka: cannot reach Kafka" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("leadflow: error: cannot reach Kafka")
    assert "gave up after 3 s" in proc.stderr
