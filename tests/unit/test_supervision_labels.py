"""berth.restart_labels and berth.health_labels, run's flags as labels, client.supervision."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import berth
from actors.health_config import HealthConfig, health_from_labels
from actors.restart_policy import RestartPolicy, check_labels, policy_from_labels
from berth.console.commands import UsageError
from berth.console.supervision_args import restarts_on_exit, supervision_labels
from berth.console.table import TOP_LEVEL
from tests.unit.test_client import FakeServer, reply


def test_restart_labels_spell_every_restart_label_and_the_daemon_reads_them_back():
    labels = berth.restart_labels(
        "on-failure:3",
        backoff_base="200ms",
        backoff_max="30s",
        reset_after="1m",
        intensity=(5, "1m"),
        never_on_exit=[0, 143],
    )
    assert labels == {
        "containerd.io/restart.policy": "on-failure:3",
        "berth.io/restart.backoff-base": "200ms",
        "berth.io/restart.backoff-max": "30s",
        "berth.io/restart.reset-after": "1m",
        "berth.io/restart.intensity": "5/1m",
        "berth.io/restart.never-on-exit": "0,143",
    }
    check_labels(labels)
    assert policy_from_labels(labels) == RestartPolicy(
        "on-failure", 3, 0.2, 30.0, 60.0, (5, 60.0), frozenset({0, 143})
    )


def test_arguments_left_out_leave_their_labels_out_so_the_defaults_apply():
    assert berth.restart_labels("always") == {"containerd.io/restart.policy": "always"}
    assert policy_from_labels(berth.restart_labels("always")) == RestartPolicy("always")
    assert berth.restart_labels("no", never_on_exit=[]) == {"containerd.io/restart.policy": "no"}
    assert berth.health_labels("true") == {"berth.io/health.cmd": "true"}


def test_durations_may_be_seconds_or_timedeltas_and_become_go_durations():
    labels = berth.restart_labels(
        "always", backoff_base=0.02, backoff_max=90, reset_after=timedelta(minutes=2)
    )
    assert labels["berth.io/restart.backoff-base"] == "20ms"
    assert labels["berth.io/restart.backoff-max"] == "90s"
    assert labels["berth.io/restart.reset-after"] == "120s"
    policy = policy_from_labels(labels)
    assert (policy.backoff_base_s, policy.backoff_max_s, policy.reset_after_s) == (0.02, 90, 120)
    assert berth.restart_labels("always", intensity=(3, 1.5))["berth.io/restart.intensity"] == (
        "3/1.5s"
    )


def test_health_labels_spell_every_health_label_and_the_daemon_reads_them_back():
    labels = berth.health_labels(
        "test -f /ok",
        interval="10s",
        timeout=2,
        retries=5,
        start_period="30s",
        start_interval=0.5,
        on_failure="restart",
    )
    assert labels == {
        "berth.io/health.cmd": "test -f /ok",
        "berth.io/health.interval": "10s",
        "berth.io/health.timeout": "2s",
        "berth.io/health.retries": "5",
        "berth.io/health.start-period": "30s",
        "berth.io/health.start-interval": "500ms",
        "berth.io/health.on-failure": "restart",
    }
    check_labels(labels)
    assert health_from_labels(labels) == HealthConfig(
        ("/bin/sh", "-c", "test -f /ok"), 10.0, 2.0, 5, 30.0, 0.5, "restart"
    )


def test_a_command_given_as_a_list_is_exec_form():
    labels = berth.health_labels(["/bin/check", "--quick", "a b"])
    assert labels["berth.io/health.cmd"] == '["/bin/check", "--quick", "a b"]'
    config = health_from_labels(labels)
    assert config is not None and config.cmd == ("/bin/check", "--quick", "a b")


def test_the_labels_of_both_together_pass_the_daemons_check():
    check_labels({**berth.restart_labels("unless-stopped"), **berth.health_labels("true")})


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({"policy": "sometimes"}, "containerd.io/restart.policy"),
        ({"policy": "always:3"}, "containerd.io/restart.policy"),
        ({"policy": ""}, "containerd.io/restart.policy"),
        ({"policy": "always", "backoff_base": "fast"}, "berth.io/restart.backoff-base"),
        ({"policy": "always", "backoff_base": 0}, "berth.io/restart.backoff-base"),
        ({"policy": "always", "backoff_base": True}, "berth.io/restart.backoff-base"),
        ({"policy": "always", "backoff_base": float("nan")}, "berth.io/restart.backoff-base"),
        ({"policy": "always", "backoff_base": ""}, "berth.io/restart.backoff-base"),
        (
            {"policy": "always", "backoff_base": "2s", "backoff_max": "1s"},
            "berth.io/restart.backoff-max",
        ),
        ({"policy": "always", "reset_after": "-1s"}, "berth.io/restart.reset-after"),
        ({"policy": "always", "intensity": "5"}, "berth.io/restart.intensity"),
        ({"policy": "always", "intensity": (0, "1m")}, "berth.io/restart.intensity"),
        ({"policy": "always", "intensity": (5, 0.5)}, "berth.io/restart.intensity"),
        ({"policy": "always", "never_on_exit": [256]}, "berth.io/restart.never-on-exit"),
        ({"policy": "always", "never_on_exit": [True]}, "berth.io/restart.never-on-exit"),
        ({"policy": "always", "never_on_exit": "1,x"}, "berth.io/restart.never-on-exit"),
    ],
)
def test_a_bad_restart_value_is_refused_naming_its_label(kwargs, label):
    with pytest.raises(berth.InvalidArgument, match=f'^label "{label}": '):
        berth.restart_labels(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({"cmd": ""}, "berth.io/health.cmd"),
        ({"cmd": "   "}, "berth.io/health.cmd"),
        ({"cmd": []}, "berth.io/health.cmd"),
        ({"cmd": ["ok", 1]}, "berth.io/health.cmd"),
        ({"cmd": "true", "interval": "10ms"}, "berth.io/health.interval"),
        ({"cmd": "true", "timeout": "soon"}, "berth.io/health.timeout"),
        ({"cmd": "true", "retries": 0}, "berth.io/health.retries"),
        ({"cmd": "true", "retries": 2.5}, "berth.io/health.retries"),
        ({"cmd": "true", "start_period": "25h"}, "berth.io/health.start-period"),
        ({"cmd": "true", "start_interval": 0.01}, "berth.io/health.start-interval"),
        ({"cmd": "true", "on_failure": "explode"}, "berth.io/health.on-failure"),
    ],
)
def test_a_bad_health_value_is_refused_naming_its_label(kwargs, label):
    with pytest.raises(berth.InvalidArgument, match=f'^label "{label}": '):
        berth.health_labels(**kwargs)


# --- run's flags -----------------------------------------------------------------------


def run_args(*words: str):
    return TOP_LEVEL["run"].parser().parse_args([*words, "busybox", "job", "true"])


def test_run_flags_become_the_same_labels_as_the_helpers_give():
    args = run_args(
        "-d", "--restart", "on-failure:2", "--restart-backoff", "20ms",
        "--restart-backoff-max", "1s", "--health-cmd", "true", "--health-interval", "200ms",
        "--health-timeout", "1s", "--health-retries", "2", "--health-start-period", "1s",
        "--health-start-interval", "100ms", "--health-on-failure", "kill",
    )  # fmt: skip
    assert supervision_labels(args, "run") == {
        **berth.restart_labels("on-failure:2", backoff_base="20ms", backoff_max="1s"),
        **berth.health_labels(
            "true",
            interval="200ms",
            timeout="1s",
            retries=2,
            start_period="1s",
            start_interval="100ms",
            on_failure="kill",
        ),
    }
    assert restarts_on_exit(args)
    assert supervision_labels(run_args(), "run") == {}
    assert not restarts_on_exit(run_args("--restart", "no"))
    assert restarts_on_exit(run_args("--health-cmd", "true", "--health-on-failure", "restart"))


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--restart", "often"], 'run: --restart: "often" is not one of'),
        (["--restart", "always", "--restart-backoff", "9"], "run: --restart-backoff: "),
        (["--restart-backoff-max", "1s"], "run: --restart-backoff-max needs --restart"),
        (["--health-retries", "2"], "run: --health-retries needs --health-cmd"),
        (["--health-cmd", "true", "--health-timeout", "x"], "run: --health-timeout: "),
    ],
)
def test_a_bad_or_lone_flag_is_a_usage_error_naming_the_flag(words, message):
    with pytest.raises(UsageError) as caught:
        supervision_labels(run_args(*words), "run")
    assert str(caught.value).startswith(message)


def test_sv_is_supervision():
    assert TOP_LEVEL["sv"] is TOP_LEVEL["supervision"]


# --- client.supervision ----------------------------------------------------------------


def test_client_supervision_get_and_list_call_the_service_and_unwrap_the_reply(tmp_path):
    def handler(server, envelope, request):
        method = request["method"]
        if method == "berth.v1.Supervision/Get":
            sv = {"container_id": request["body"]["container_id"], "policy": "always"}
            reply(server, envelope, request, body={"supervision": sv})
        else:
            reply(server, envelope, request, body={"supervision": [{"container_id": "a"}]})

    server = FakeServer(f"ipc://{tmp_path}/sv.sock", handler)
    try:
        with berth.Client(server.address) as client:
            assert client.supervision.get("web") == {"container_id": "web", "policy": "always"}
            assert client.supervision.list() == [{"container_id": "a"}]

        async def both():
            async with berth.AsyncClient(server.address) as client:
                return await client.supervision.get("db"), await client.supervision.list()

        assert asyncio.run(both()) == (
            {"container_id": "db", "policy": "always"},
            [{"container_id": "a"}],
        )
        sent = [(r["method"], r["body"]) for r in server.received]
        assert sent[:2] == [
            ("berth.v1.Supervision/Get", {"container_id": "web"}),
            ("berth.v1.Supervision/List", {}),
        ]
    finally:
        server.stop()
