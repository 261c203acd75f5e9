"""simulator/cli.py: config precedence, start-up errors, the start line and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.cli import build_config, serve
from streams.cli import main
from streams.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("port: 9001\nsmtp_port: 9002\nseed: 1\nendpoints: {sms: {error_rate: 0.5}}\n")
    env = {"LEADFLOW_SIM_PORT": "9101", "LEADFLOW_TIME_SCALE": "3600"}
    config = build_config(config_file=path, seed=5, environ=env)
    assert (config.port, config.smtp_port, config.seed) == (9101, 9002, 5)
    assert config.endpoint("sms").error_rate == 0.5
    assert config.time_scale == 3600
    via_env = build_config(environ={"LEADFLOW_SIM_CONFIG": str(path)})
    assert via_env.port == 9001


def test_webhook_url_without_secret_fails_at_startup() -> None:
    with pytest.raises(ConfigError, match="secret is missing"):
        build_config(webhook_url="http://127.0.0.1:6066/webhooks/sim", environ={})
    ok = build_config(
        webhook_url="http://127.0.0.1:6066/webhooks/sim",
        environ={"LEADFLOW_WEBHOOK_SECRET": "a-long-enough-secret"},
    )
    assert ok.webhooks.secret == "a-long-enough-secret"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ('{"endpoints": {"sms": {"rate_limit": "fast"}}}', "endpoints.sms.rate_limit"),
    ],
)
def test_leadflow_sim_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "sim.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as excinfo:
        main(["sim", "--config", str(path), "--check"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("leadflow: error: simulator config:")
    assert expected in err and err.count("\n") == 1


def test_check_flag_accepts_a_good_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sim.json"
    path.write_text(json.dumps({"endpoints": {"sms": {"rate_limit": "100/60"}}}))
    main(["sim", "--config", str(path), "--check"])
    assert "config OK" in capsys.readouterr().out


async def test_serve_logs_one_start_line(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    config = build_config(port=0, smtp_port=0, seed=3, environ={})
    with caplog.at_level(logging.INFO, logger="leadflow.sim"):
        task = asyncio.create_task(serve(config, stop))
        for _ in range(500):
            if any("ready" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task
    [ready] = [r.getMessage() for r in caplog.records if "ready" in r.getMessage()]
    assert re.search(
        r"http http://127\.0\.0\.1:\d+ smtp 127\.0\.0\.1:\d+ webhooks off seed 3", ready
    )


def test_sigterm_shuts_down_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADFLOW_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from streams.cli import main; main()",
            "sim",
            "--port",
            "0",
            "--smtp-port",
            "0",
        ],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "leadflow sim ready: http http://127.0.0.1:" in line
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        rest = process.stderr.read()
        assert "stopping: 0 messages accepted" in rest
        assert "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
