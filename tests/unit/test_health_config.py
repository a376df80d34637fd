"""Health-check labels and the health state machine (pure, no actors)."""

from __future__ import annotations

import pytest

from actors import health_config as hc
from actors.health_config import (
    CMD_LABEL,
    INTERVAL_LABEL,
    MAX_OUTPUT_BYTES,
    ON_FAILURE_LABEL,
    RETRIES_LABEL,
    START_INTERVAL_LABEL,
    START_PERIOD_LABEL,
    TIMEOUT_LABEL,
    HealthConfig,
    HealthResult,
    HealthState,
    format_duration,
    health_from_labels,
    truncate_output,
)
from actors.restart_policy import check_labels
from wire.errors import InvalidArgument

S = 1_000_000_000  # ns


def test_the_label_names():
    assert (CMD_LABEL, INTERVAL_LABEL, TIMEOUT_LABEL, RETRIES_LABEL) == (
        "berth.io/health.cmd",
        "berth.io/health.interval",
        "berth.io/health.timeout",
        "berth.io/health.retries",
    )
    assert (START_PERIOD_LABEL, START_INTERVAL_LABEL, ON_FAILURE_LABEL) == (
        "berth.io/health.start-period",
        "berth.io/health.start-interval",
        "berth.io/health.on-failure",
    )
    known = hc.HEALTH_LABELS
    assert known == {
        CMD_LABEL,
        INTERVAL_LABEL,
        TIMEOUT_LABEL,
        RETRIES_LABEL,
        START_PERIOD_LABEL,
        START_INTERVAL_LABEL,
        ON_FAILURE_LABEL,
    }


def test_exported_members():
    for name in hc.__all__:
        assert hasattr(hc, name)
    assert {"HealthConfig", "HealthState", "HealthResult", "health_from_labels"} <= set(hc.__all__)


# --- labels --------------------------------------------------------------------


def test_no_cmd_is_no_health_check():
    assert health_from_labels({}) is None
    assert health_from_labels({CMD_LABEL: ""}) is None
    assert health_from_labels({INTERVAL_LABEL: "1s"}) is None


def test_a_cmd_alone_gets_dockers_defaults():
    cfg = health_from_labels({CMD_LABEL: '["/bin/true"]'})
    assert cfg == HealthConfig(cmd=("/bin/true",))
    assert (cfg.interval_s, cfg.timeout_s, cfg.retries) == (30.0, 30.0, 3)
    assert (cfg.start_period_s, cfg.start_interval_s, cfg.on_failure) == (0.0, 5.0, "none")


@pytest.mark.parametrize(
    ("value", "argv"),
    [
        ('["/bin/sh","-c","test -f /ok"]', ("/bin/sh", "-c", "test -f /ok")),
        ('[ "/bin/check", "--quick" ]', ("/bin/check", "--quick")),
        ('["/bin/echo", ""]', ("/bin/echo", "")),
        ('["/bin/echo", "é ✓"]', ("/bin/echo", "é ✓")),
        ("test -f /ok", ("/bin/sh", "-c", "test -f /ok")),
        (
            "curl -fsS http://localhost/ || exit 1",
            ("/bin/sh", "-c", "curl -fsS http://localhost/ || exit 1"),
        ),
        # A shell test that is not JSON is shell form; so is JSON that is not an array.
        ("[ -f /ok ]", ("/bin/sh", "-c", "[ -f /ok ]")),
        ('["unterminated"', ("/bin/sh", "-c", '["unterminated"')),
        ("true", ("/bin/sh", "-c", "true")),
        ('"quoted"', ("/bin/sh", "-c", '"quoted"')),
        ("1", ("/bin/sh", "-c", "1")),
    ],
)
def test_the_cmd_is_exec_form_for_a_json_array_else_shell_form(value, argv):
    assert health_from_labels({CMD_LABEL: value}).cmd == argv


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[]", "the command array is empty"),
        ("[ ]", "the command array is empty"),
        ('["/bin/x", 1]', "a JSON array must hold only strings (exec form)"),
        ("[1]", "a JSON array must hold only strings"),
        ('[["/bin/x"]]', "a JSON array must hold only strings"),
        ('["", "x"]', "the program (first element) is empty"),
        ('["/bin/x", "a\\u0000b"]', "the command contains a NUL character"),
        ("echo a\0b", "the command contains a NUL character"),
        ("   ", "the command is blank"),
    ],
)
def test_a_malformed_cmd_names_the_label(value, message):
    with pytest.raises(InvalidArgument) as exc:
        health_from_labels({CMD_LABEL: value})
    assert exc.value.message.startswith(f'label "{CMD_LABEL}": {message}')


@pytest.mark.parametrize(
    ("label", "field", "value", "seconds"),
    [
        (INTERVAL_LABEL, "interval_s", "100ms", 0.1),
        (INTERVAL_LABEL, "interval_s", "1m30s", 90.0),
        (INTERVAL_LABEL, "interval_s", "24h", 86400.0),
        (TIMEOUT_LABEL, "timeout_s", "1ms", 0.001),
        (TIMEOUT_LABEL, "timeout_s", "2.5s", 2.5),
        (START_PERIOD_LABEL, "start_period_s", "0", 0.0),
        (START_PERIOD_LABEL, "start_period_s", "1h", 3600.0),
        (START_INTERVAL_LABEL, "start_interval_s", "100ms", 0.1),
        (START_INTERVAL_LABEL, "start_interval_s", "2s", 2.0),
    ],
)
def test_each_duration_label_parses(label, field, value, seconds):
    cfg = health_from_labels({CMD_LABEL: "true", label: value})
    assert getattr(cfg, field) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("label", "value", "message"),
    [
        (INTERVAL_LABEL, "often", '"often" is not a duration (like 100ms, 2s, 1m)'),
        (INTERVAL_LABEL, "30", '"30" is not a duration'),
        (INTERVAL_LABEL, "99ms", '"99ms" is less than 100ms'),
        (INTERVAL_LABEL, "0", '"0" is less than 100ms'),
        (INTERVAL_LABEL, "25h", '"25h" is more than 24h'),
        (TIMEOUT_LABEL, "0s", '"0s" is less than 1ms'),
        (TIMEOUT_LABEL, "1d", '"1d" is not a duration'),
        (TIMEOUT_LABEL, "24h1ns", '"24h1ns" is more than 24h'),
        (START_PERIOD_LABEL, "-1s", '"-1s" is less than 0s'),
        (START_PERIOD_LABEL, "later", '"later" is not a duration'),
        (START_INTERVAL_LABEL, "10ms", '"10ms" is less than 100ms'),
        (START_INTERVAL_LABEL, "48h", '"48h" is more than 24h'),
    ],
)
def test_a_malformed_duration_label_names_the_label(label, value, message):
    with pytest.raises(InvalidArgument) as exc:
        health_from_labels({CMD_LABEL: "true", label: value})
    assert exc.value.message.startswith(f'label "{label}": {message}')


@pytest.mark.parametrize(("value", "retries"), [("1", 1), ("3", 3), ("10000", 10000)])
def test_retries_parse(value, retries):
    assert health_from_labels({CMD_LABEL: "true", RETRIES_LABEL: value}).retries == retries


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "0 is out of range (1..10000)"),
        ("10001", "10001 is out of range (1..10000)"),
        ("-1", '"-1" is not an integer'),
        ("three", '"three" is not an integer'),
        ("3.0", '"3.0" is not an integer'),
        ("²", '"²" is not an integer'),
    ],
)
def test_malformed_retries_name_the_label(value, message):
    with pytest.raises(InvalidArgument) as exc:
        health_from_labels({CMD_LABEL: "true", RETRIES_LABEL: value})
    assert exc.value.message == f'label "{RETRIES_LABEL}": {message}'


@pytest.mark.parametrize("value", ["none", "kill", "restart"])
def test_on_failure_takes_podmans_actions(value):
    assert health_from_labels({CMD_LABEL: "true", ON_FAILURE_LABEL: value}).on_failure == value


@pytest.mark.parametrize("value", ["stop", "Kill", "restart ", "ignore"])
def test_a_malformed_on_failure_names_the_label(value):
    with pytest.raises(InvalidArgument) as exc:
        health_from_labels({CMD_LABEL: "true", ON_FAILURE_LABEL: value})
    assert exc.value.message.startswith(
        f'label "{ON_FAILURE_LABEL}": "{value}" is not one of none, kill, restart'
    )


def test_health_labels_are_validated_without_a_cmd_too():
    with pytest.raises(InvalidArgument, match=RETRIES_LABEL):
        health_from_labels({RETRIES_LABEL: "many"})
    with pytest.raises(InvalidArgument, match=TIMEOUT_LABEL):
        check_labels({TIMEOUT_LABEL: "soon"})


def test_check_labels_refuses_a_malformed_cmd():
    with pytest.raises(InvalidArgument, match=CMD_LABEL):
        check_labels({CMD_LABEL: "[]"})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.1, "100ms"),
        (1.5, "1.5s"),
        (60, "60s"),
        (0.0000015, "1.5us"),
        (1e-9, "1ns"),
        (3600, "3600s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# --- output truncation -------------------------------------------------------------


def test_short_output_is_kept_whole():
    assert truncate_output("ok\n") == "ok\n"
    assert truncate_output("x" * MAX_OUTPUT_BYTES) == "x" * MAX_OUTPUT_BYTES


def test_long_output_is_cut_to_4_kib_ending_in_an_ellipsis():
    out = truncate_output("x" * 10_000)
    assert len(out.encode()) == MAX_OUTPUT_BYTES == 4096
    assert out.endswith("...")
    assert out.startswith("x" * 4000)


@pytest.mark.parametrize("char", ["é", "✓", "😀"])  # 2, 3 and 4 bytes
@pytest.mark.parametrize("lead", range(4))
def test_multibyte_output_is_cut_on_a_character_boundary(char, lead):
    text = "a" * lead + char * 5000
    out = truncate_output(text)
    data = out.encode()
    assert len(data) <= MAX_OUTPUT_BYTES
    assert len(data) > MAX_OUTPUT_BYTES - 3 - len(char.encode())  # no more lost than one char
    assert out.endswith("...")
    assert set(out[lead:-3]) == {char}


def test_unencodable_output_is_replaced_not_raised():
    assert truncate_output("bad \udcff byte") == "bad ? byte"


# --- the state machine ---------------------------------------------------------------


def _state(**kw):
    return HealthState(HealthConfig(cmd=("/bin/check",), **kw), task_started_ns=1000 * S)


def _run(state, exit_code, at_s, output="", timed_out=False):
    """One check started at_s after the task started, taking 10 ms."""
    start = state.started_ns + int(at_s * S)
    return state.record(exit_code, output, start, start + 10_000_000, timed_out)


def test_a_new_state_is_starting_with_no_log():
    s = _state()
    assert s.to_wire() == {"status": "starting", "failing_streak": 0, "log": []}
    assert s.needs_action() is None


def test_a_success_makes_a_starting_task_healthy():
    s = _state()
    assert _run(s, 0, 30) is True
    assert (s.status, s.failing_streak) == ("healthy", 0)
    assert _run(s, 0, 60) is False


def test_retries_failures_in_a_row_make_it_unhealthy():
    s = _state(retries=3)
    _run(s, 0, 30)
    assert _run(s, 1, 60) is False
    assert _run(s, 1, 90) is False
    assert (s.status, s.failing_streak) == ("healthy", 2)
    assert _run(s, 1, 120) is True
    assert (s.status, s.failing_streak) == ("unhealthy", 3)
    assert _run(s, 1, 150) is False  # unhealthy stays unhealthy
    assert s.failing_streak == 4


def test_a_starting_task_becomes_unhealthy_without_ever_being_healthy():
    s = _state(retries=2)
    assert _run(s, 1, 1) is False
    assert _run(s, 2, 2) is True  # exit code 2 ("reserved" in Docker) is a failure too
    assert s.status == "unhealthy"


def test_a_success_resets_the_streak_and_makes_an_unhealthy_task_healthy():
    s = _state(retries=1)
    _run(s, 1, 1)
    assert s.status == "unhealthy"
    assert _run(s, 0, 2) is True
    assert (s.status, s.failing_streak) == ("healthy", 0)


def test_failures_in_the_start_period_do_not_count_while_starting():
    s = _state(retries=2, start_period_s=60)
    for at in (1, 10, 30, 59.9):
        assert _run(s, 1, at) is False
    assert (s.status, s.failing_streak) == ("starting", 0)
    assert len(s.log) == 4  # still logged
    assert _run(s, 1, 60) is False  # the period is over: this one counts
    assert s.failing_streak == 1
    assert _run(s, 1, 61) is True
    assert s.status == "unhealthy"


def test_a_success_in_the_start_period_makes_it_healthy_and_later_failures_count():
    s = _state(retries=2, start_period_s=60)
    _run(s, 1, 1)
    assert _run(s, 0, 2) is True
    assert s.status == "healthy"
    _run(s, 1, 3)  # healthy now: failures count even inside the period
    assert s.failing_streak == 1
    assert _run(s, 1, 4) is True
    assert s.status == "unhealthy"


def test_the_start_period_is_measured_from_the_checks_start():
    s = _state(retries=1, start_period_s=5)
    start = s.started_ns + 4 * S
    assert s.record(1, "", start, start + 10 * S) is False  # began inside, ended after


def test_a_timed_out_check_is_a_failure_with_exit_code_minus_1():
    s = _state(retries=1, timeout_s=2)
    assert _run(s, 0, 1, output="partial", timed_out=True) is True
    assert s.status == "unhealthy"
    entry = s.to_wire()["log"][0]
    assert entry["exit_code"] == -1
    assert entry["output"] == "health check exceeded timeout (2s)\npartial"


def test_a_timed_out_check_without_output_says_only_so():
    s = _state(timeout_s=0.5)
    _run(s, 0, 1, timed_out=True)
    assert s.log[0].output == "health check exceeded timeout (500ms)"


def test_the_log_keeps_the_last_5_results_oldest_first():
    s = _state()
    for n in range(8):
        _run(s, n % 2, n + 1, output=f"run {n}")
    assert [r.output for r in s.log] == [f"run {n}" for n in range(3, 8)]
    assert [r.exit_code for r in s.log] == [1, 0, 1, 0, 1]


def test_logged_output_is_truncated_to_4_kib_of_utf8():
    s = _state()
    _run(s, 1, 1, output="✓" * 3000)  # 9000 bytes
    out = s.log[0].output
    assert len(out.encode()) <= MAX_OUTPUT_BYTES
    assert out.endswith("...") and set(out[:-3]) == {"✓"}


def test_to_wire_gives_status_streak_and_the_log_in_ns():
    s = _state(retries=5)
    s.record(1, "no\n", 1001 * S, 1001 * S + 5, False)
    s.record(0, "ok\n", 1002 * S, 1002 * S + 7, False)
    assert s.to_wire() == {
        "status": "healthy",
        "failing_streak": 0,
        "log": [
            {"start": 1001 * S, "end": 1001 * S + 5, "exit_code": 1, "output": "no\n"},
            {"start": 1002 * S, "end": 1002 * S + 7, "exit_code": 0, "output": "ok\n"},
        ],
    }
    assert s.log[0] == HealthResult(1001 * S, 1001 * S + 5, 1, "no\n")


def test_next_interval_is_the_start_interval_while_starting_in_the_start_period():
    s = _state(interval_s=30, start_interval_s=2, start_period_s=60)
    assert s.next_interval_s(0) == 2
    assert s.next_interval_s(59.9) == 2
    assert s.next_interval_s(60) == 30  # the period is over
    _run(s, 0, 10)
    assert s.next_interval_s(10) == 30  # healthy: the normal interval


def test_next_interval_without_a_start_period_is_the_interval():
    s = _state(interval_s=10)
    assert s.next_interval_s(0) == 10


@pytest.mark.parametrize("action", ["kill", "restart"])
def test_needs_action_fires_on_becoming_unhealthy_only(action):
    s = _state(retries=2, on_failure=action)
    _run(s, 1, 1)
    assert s.needs_action() is None
    _run(s, 1, 2)
    assert s.needs_action() == action
    assert s.needs_action() == action  # a query: asking again does not consume it
    _run(s, 1, 3)
    assert s.needs_action() is None  # still unhealthy: no second action
    _run(s, 0, 4)
    assert s.needs_action() is None
    _run(s, 1, 5)
    _run(s, 1, 6)
    assert s.needs_action() == action  # unhealthy again


def test_needs_action_is_none_for_on_failure_none():
    s = _state(retries=1)
    _run(s, 1, 1)
    assert s.status == "unhealthy"
    assert s.needs_action() is None
