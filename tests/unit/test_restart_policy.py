"""Restart policy labels, the restart decision and the backoff (pure, no actors)."""

from __future__ import annotations

import pytest

from actors import restart_policy as rp
from actors.restart_policy import (
    BACKOFF_BASE_LABEL,
    BACKOFF_MAX_LABEL,
    COUNT_LABEL,
    EXPLICITLY_STOPPED_LABEL,
    INTENSITY_LABEL,
    NEVER_ON_EXIT_LABEL,
    POLICY_LABEL,
    RESET_AFTER_LABEL,
    STATUS_LABEL,
    Decision,
    RestartPolicy,
    attempt_after_run,
    check_labels,
    decide,
    delay_s,
    desired_state,
    policy_from_labels,
)
from wire.errors import InvalidArgument

S = 1_000_000_000  # ns


def test_the_label_names_are_containerds_and_berths():
    assert POLICY_LABEL == "containerd.io/restart.policy"
    assert STATUS_LABEL == "containerd.io/restart.status"
    assert EXPLICITLY_STOPPED_LABEL == "containerd.io/restart.explicitly-stopped"
    assert COUNT_LABEL == "containerd.io/restart.count"
    assert BACKOFF_BASE_LABEL == "berth.io/restart.backoff-base"
    assert BACKOFF_MAX_LABEL == "berth.io/restart.backoff-max"
    assert RESET_AFTER_LABEL == "berth.io/restart.reset-after"
    assert INTENSITY_LABEL == "berth.io/restart.intensity"
    assert NEVER_ON_EXIT_LABEL == "berth.io/restart.never-on-exit"


def test_exported_members():
    assert set(rp.__all__) == {
        "BACKOFF_BASE_LABEL",
        "BACKOFF_MAX_LABEL",
        "COUNT_LABEL",
        "EXPLICITLY_STOPPED_LABEL",
        "INTENSITY_LABEL",
        "NEVER_ON_EXIT_LABEL",
        "POLICY_LABEL",
        "RESET_AFTER_LABEL",
        "RESTART_LABELS",
        "RESTART_PREFIX",
        "STATUS_LABEL",
        "Decision",
        "RestartPolicy",
        "attempt_after_run",
        "check_labels",
        "decide",
        "delay_s",
        "desired_state",
        "format_duration",
        "parse_duration",
        "policy_from_labels",
    }
    for name in rp.__all__:
        assert hasattr(rp, name)


# --- policy labels -----------------------------------------------------------


def test_no_labels_is_policy_no_with_the_defaults():
    p = policy_from_labels({})
    assert p == RestartPolicy()
    assert (p.mode, p.max_retries, p.backoff_base_s, p.backoff_max_s, p.reset_after_s) == (
        "no",
        None,
        0.1,
        60.0,
        10.0,
    )
    assert p.intensity is None
    assert p.never_on_exit == frozenset()


@pytest.mark.parametrize(
    ("value", "mode", "retries", "name"),
    [
        ("no", "no", None, "no"),
        ("always", "always", None, "always"),
        ("unless-stopped", "unless-stopped", None, "unless-stopped"),
        ("on-failure", "on-failure", None, "on-failure"),
        ("on-failure:3", "on-failure", 3, "on-failure:3"),
        ("on-failure:1", "on-failure", 1, "on-failure:1"),
        ("on-failure:0", "on-failure", None, "on-failure"),  # 0 = no limit, as Docker
        ("on-failure:2147483647", "on-failure", 2147483647, "on-failure:2147483647"),
    ],
)
def test_each_policy_value_parses(value, mode, retries, name):
    p = policy_from_labels({POLICY_LABEL: value})
    assert (p.mode, p.max_retries, p.name) == (mode, retries, name)


def test_an_empty_policy_label_is_absent():
    assert policy_from_labels({POLICY_LABEL: ""}).mode == "no"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sometimes", '"sometimes" is not one of no, always, on-failure[:N], unless-stopped'),
        ("Always", '"Always" is not one of'),
        ("always ", '"always " is not one of'),
        ("never", '"never" is not one of'),
        ("on-failure:", '"" is not a retry count'),
        ("on-failure:x", '"x" is not a retry count'),
        ("on-failure:-1", '"-1" is not a retry count'),
        ("on-failure:+3", '"+3" is not a retry count'),
        ("on-failure: 3", '" 3" is not a retry count'),
        ("on-failure:3:4", '"3:4" is not a retry count'),
        ("on-failure:2147483648", "2147483648 is out of range (0..2147483647)"),
        ("always:3", '"always" takes no retry count'),
        ("no:1", '"no" takes no retry count'),
        ("unless-stopped:2", '"unless-stopped" takes no retry count'),
    ],
)
def test_a_malformed_policy_names_the_label(value, message):
    with pytest.raises(InvalidArgument) as exc:
        policy_from_labels({POLICY_LABEL: value})
    assert exc.value.message.startswith(f'label "{POLICY_LABEL}": ')
    assert message in exc.value.message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("100ms", 0.1),
        ("1ms", 0.001),
        ("1000us", 0.001),
        ("1000µs", 0.001),
        ("1000000ns", 0.001),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("2.s", 2.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("0.5m10s", 40.0),
    ],
)
def test_the_backoff_base_takes_go_durations(value, seconds):
    assert policy_from_labels({BACKOFF_BASE_LABEL: value}).backoff_base_s == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", '"fast" is not a duration (like 100ms, 2s, 1m)'),
        ("100", '"100" is not a duration'),  # a bare number: ms or s?
        ("1.5", '"1.5" is not a duration'),
        ("10 s", '"10 s" is not a duration'),
        ("10S", '"10S" is not a duration'),
        ("1d", '"1d" is not a duration'),
        (".s", '".s" is not a duration'),
        ("s", '"s" is not a duration'),
        ("1s2", '"1s2" is not a duration'),
        ("+", '"+" is not a duration'),
        ("٣s", '"٣s" is not a duration'),  # a non-ASCII digit
        ("0", '"0" is less than 1ms'),
        ("0s", '"0s" is less than 1ms'),
        ("999us", '"999us" is less than 1ms'),
        ("-1s", '"-1s" is less than 1ms'),
        ("1h1ns", '"1h1ns" is more than 1h'),
        ("2h", '"2h" is more than 1h'),
    ],
)
def test_a_malformed_backoff_base_names_the_label(value, message):
    with pytest.raises(InvalidArgument) as exc:
        policy_from_labels({BACKOFF_BASE_LABEL: value})
    assert exc.value.message.startswith(f'label "{BACKOFF_BASE_LABEL}": {message}')


def test_the_bounds_of_the_backoff_base_are_inclusive():
    assert policy_from_labels({BACKOFF_BASE_LABEL: "1ms"}).backoff_base_s == 0.001
    assert policy_from_labels({BACKOFF_BASE_LABEL: "1h"}).backoff_base_s == 3600.0


def test_the_backoff_max_defaults_to_60s_or_the_base_when_that_is_larger():
    assert policy_from_labels({BACKOFF_BASE_LABEL: "1s"}).backoff_max_s == 60.0
    assert policy_from_labels({BACKOFF_BASE_LABEL: "2m"}).backoff_max_s == 120.0


@pytest.mark.parametrize(
    ("labels", "seconds"),
    [
        ({BACKOFF_MAX_LABEL: "5m"}, 300.0),
        ({BACKOFF_MAX_LABEL: "24h"}, 86400.0),
        ({BACKOFF_MAX_LABEL: "100ms"}, 0.1),  # equal to the default base
        ({BACKOFF_BASE_LABEL: "2s", BACKOFF_MAX_LABEL: "2s"}, 2.0),
    ],
)
def test_the_backoff_max_may_be_anything_from_the_base_to_24h(labels, seconds):
    assert policy_from_labels(labels).backoff_max_s == seconds


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({BACKOFF_MAX_LABEL: "99ms"}, '"99ms" is less than the backoff base (100ms)'),
        (
            {BACKOFF_BASE_LABEL: "2s", BACKOFF_MAX_LABEL: "1.5s"},
            '"1.5s" is less than the backoff base (2s)',
        ),
        ({BACKOFF_MAX_LABEL: "25h"}, '"25h" is more than 24h'),
        ({BACKOFF_MAX_LABEL: "soon"}, '"soon" is not a duration'),
    ],
)
def test_a_malformed_backoff_max_names_the_label(labels, message):
    with pytest.raises(InvalidArgument) as exc:
        policy_from_labels(labels)
    assert exc.value.message.startswith(f'label "{BACKOFF_MAX_LABEL}": {message}')


@pytest.mark.parametrize(
    ("value", "seconds"), [("0", 0.0), ("0s", 0.0), ("30s", 30.0), ("24h", 86400.0)]
)
def test_reset_after_takes_0_to_24h(value, seconds):
    assert policy_from_labels({RESET_AFTER_LABEL: value}).reset_after_s == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1s", '"-1s" is less than 0s'),
        ("24h1s", '"24h1s" is more than 24h'),
        ("ten", '"ten" is not a duration'),
    ],
)
def test_a_malformed_reset_after_names_the_label(value, message):
    with pytest.raises(InvalidArgument) as exc:
        policy_from_labels({RESET_AFTER_LABEL: value})
    assert exc.value.message.startswith(f'label "{RESET_AFTER_LABEL}": {message}')


@pytest.mark.parametrize(
    ("value", "intensity"),
    [
        ("5/60s", (5, 60.0)),
        ("1/1s", (1, 1.0)),
        ("10000/24h", (10000, 86400.0)),
        ("3/1m30s", (3, 90.0)),
    ],
)
def test_intensity_is_n_restarts_within_t(value, intensity):
    assert policy_from_labels({INTENSITY_LABEL: value}).intensity == intensity


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", '"5" is not N/T (like 5/60s)'),
        ("5:60s", '"5:60s" is not N/T'),
        ("/60s", '"" is not a restart count (N of N/T)'),
        ("x/60s", '"x" is not a restart count'),
        ("0/60s", "0 is out of range (1..10000)"),
        ("10001/60s", "10001 is out of range (1..10000)"),
        ("5/", '"" is not a duration'),
        ("5/60", '"60" is not a duration'),
        ("5/999ms", '"999ms" is less than 1s'),
        ("5/25h", '"25h" is more than 24h'),
        ("5/60s/2", '"60s/2" is not a duration'),
    ],
)
def test_a_malformed_intensity_names_the_label(value, message):
    with pytest.raises(InvalidArgument) as exc:
        policy_from_labels({INTENSITY_LABEL: value})
    assert exc.value.message.startswith(f'label "{INTENSITY_LABEL}": {message}')


@pytest.mark.parametrize(
    ("value", "codes"),
    [("0", {0}), ("0,3", {0, 3}), ("3, 0", {0, 3}), ("255", {255}), ("1,1", {1})],
)
def test_never_on_exit_is_a_set_of_exit_codes(value, codes):
    assert policy_from_labels({NEVER_ON_EXIT_LABEL: value}).never_on_exit == frozenset(codes)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("256", "256 is out of range (0..255)"),
        ("-1", '"-1" is not an exit code'),
        ("0,,3", '"" is not an exit code'),
        ("0,", '"" is not an exit code'),
        ("zero", '"zero" is not an exit code'),
        ("0;3", '"0;3" is not an exit code'),
        ("1.0", '"1.0" is not an exit code'),
    ],
)
def test_malformed_never_on_exit_names_the_label(value, message):
    with pytest.raises(InvalidArgument) as exc:
        policy_from_labels({NEVER_ON_EXIT_LABEL: value})
    assert exc.value.message == f'label "{NEVER_ON_EXIT_LABEL}": {message}'


def test_berth_labels_without_a_policy_label_are_fine_and_do_not_restart():
    p = policy_from_labels({BACKOFF_BASE_LABEL: "1s", INTENSITY_LABEL: "3/10s"})
    assert p.mode == "no"
    assert p.backoff_base_s == 1.0
    check_labels({BACKOFF_BASE_LABEL: "1s", INTENSITY_LABEL: "3/10s"})


def test_a_long_malformed_value_is_cut_in_the_message():
    with pytest.raises(InvalidArgument) as exc:
        policy_from_labels({BACKOFF_BASE_LABEL: "x" * 5000})
    assert len(exc.value.message) < 200
    assert '..." is not a duration' in exc.value.message


# --- desired state -------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "desired"),
    [
        ({}, "running"),
        ({STATUS_LABEL: "running"}, "running"),
        ({STATUS_LABEL: "stopped"}, "stopped"),
        ({STATUS_LABEL: ""}, "running"),
        ({EXPLICITLY_STOPPED_LABEL: "true"}, "stopped"),
        ({EXPLICITLY_STOPPED_LABEL: "1"}, "stopped"),
        ({EXPLICITLY_STOPPED_LABEL: "T"}, "stopped"),
        ({EXPLICITLY_STOPPED_LABEL: "false"}, "running"),
        ({EXPLICITLY_STOPPED_LABEL: "0"}, "running"),
        ({STATUS_LABEL: "running", EXPLICITLY_STOPPED_LABEL: "True"}, "stopped"),
        ({STATUS_LABEL: "stopped", EXPLICITLY_STOPPED_LABEL: "FALSE"}, "stopped"),
    ],
)
def test_desired_state_is_stopped_when_either_label_says_so(labels, desired):
    assert desired_state(labels) == desired


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            {STATUS_LABEL: "paused"},
            f'label "{STATUS_LABEL}": "paused" is not one of running, stopped',
        ),
        ({STATUS_LABEL: "Running"}, f'label "{STATUS_LABEL}": "Running" is not one of'),
        (
            {EXPLICITLY_STOPPED_LABEL: "yes"},
            f'label "{EXPLICITLY_STOPPED_LABEL}": "yes" is not a boolean (true, false)',
        ),
    ],
)
def test_a_malformed_desired_state_names_the_label(labels, message):
    with pytest.raises(InvalidArgument) as exc:
        desired_state(labels)
    assert exc.value.message.startswith(message)


# --- check_labels ----------------------------------------------------------------


def test_check_labels_accepts_a_full_valid_set():
    check_labels(
        {
            POLICY_LABEL: "on-failure:3",
            STATUS_LABEL: "running",
            EXPLICITLY_STOPPED_LABEL: "false",
            COUNT_LABEL: "2",
            BACKOFF_BASE_LABEL: "50ms",
            BACKOFF_MAX_LABEL: "10s",
            RESET_AFTER_LABEL: "5s",
            INTENSITY_LABEL: "5/60s",
            NEVER_ON_EXIT_LABEL: "0,3",
            "berth.io/health.cmd": '["/bin/true"]',
            "berth.io/health.interval": "1s",
            "containerd.io/restart.logpath": "/var/log/x",  # containerd's, not ours to judge
            "app": "web",
        }
    )


@pytest.mark.parametrize(
    ("labels", "label"),
    [
        ({POLICY_LABEL: "sometimes"}, POLICY_LABEL),
        ({STATUS_LABEL: "paused"}, STATUS_LABEL),
        ({EXPLICITLY_STOPPED_LABEL: "maybe"}, EXPLICITLY_STOPPED_LABEL),
        ({COUNT_LABEL: "-1"}, COUNT_LABEL),
        ({COUNT_LABEL: "two"}, COUNT_LABEL),
        ({BACKOFF_BASE_LABEL: "fast"}, BACKOFF_BASE_LABEL),
        ({BACKOFF_MAX_LABEL: "1ms"}, BACKOFF_MAX_LABEL),
        ({RESET_AFTER_LABEL: "-1s"}, RESET_AFTER_LABEL),
        ({INTENSITY_LABEL: "5"}, INTENSITY_LABEL),
        ({NEVER_ON_EXIT_LABEL: "300"}, NEVER_ON_EXIT_LABEL),
        ({"berth.io/health.interval": "often"}, "berth.io/health.interval"),
        ({"berth.io/health.retries": "0"}, "berth.io/health.retries"),
        ({"berth.io/restart.backof-base": "1s"}, "berth.io/restart.backof-base"),
        ({"berth.io/health.command": "true"}, "berth.io/health.command"),
    ],
)
def test_check_labels_refuses_each_malformed_label_by_name(labels, label):
    with pytest.raises(InvalidArgument) as exc:
        check_labels(labels)
    assert exc.value.message.startswith(f'label "{label}": ')


def test_a_misspelt_berth_label_is_refused_with_the_known_names():
    with pytest.raises(InvalidArgument) as exc:
        check_labels({"berth.io/restart.backof-base": "1s"})
    assert "unknown; berth knows berth.io/restart.backoff-base" in exc.value.message


# --- decide ------------------------------------------------------------------------


def _decide(
    policy, exit_status=1, *, oom=False, desired="running", restarts=0, recent=(), now=0, **kw
):
    return decide(
        policy,
        exit_status=exit_status,
        oom=oom,
        desired=desired,
        restarts=restarts,
        recent_restarts_ns=list(recent),
        now_ns=now,
        **kw,
    )


def _policy(value, **labels):
    return policy_from_labels({POLICY_LABEL: value, **labels})


EXITS = [(0, False), (1, False), (137, False), (137, True)]


@pytest.mark.parametrize(("exit_status", "oom"), EXITS)
def test_policy_no_never_restarts(exit_status, oom):
    d = _decide(_policy("no"), exit_status, oom=oom)
    assert d == Decision(False, "policy no", False)
    assert d.state == "STOPPED"


@pytest.mark.parametrize("mode", ["always", "unless-stopped"])
@pytest.mark.parametrize(("exit_status", "oom"), EXITS)
def test_always_and_unless_stopped_restart_on_any_exit(mode, exit_status, oom):
    d = _decide(_policy(mode), exit_status, oom=oom)
    assert d.restart
    assert d.state == "BACKOFF"
    assert d.reason == f"{mode}: exited {exit_status}" + (" (OOM)" if oom else "")


@pytest.mark.parametrize(
    ("exit_status", "oom", "restart"),
    [(0, False, False), (1, False, True), (137, False, True), (137, True, True)],
)
def test_on_failure_restarts_on_a_failure(exit_status, oom, restart):
    d = _decide(_policy("on-failure"), exit_status, oom=oom)
    assert d.restart is restart
    if not restart:
        assert d == Decision(False, "on-failure: exited 0", False)


def test_an_oom_kill_is_a_failure_even_with_exit_status_0():
    d = _decide(_policy("on-failure"), 0, oom=True)
    assert d.restart
    assert d.reason == "on-failure: exited 0 (OOM)"


def test_on_failure_3_stops_after_exactly_3_restarts():
    policy = _policy("on-failure:3")
    assert [_decide(policy, 1, restarts=n).restart for n in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    d = _decide(policy, 1, restarts=3)
    assert d == Decision(False, "on-failure: 3 restarts reached", True)
    assert d.state == "FAILED"


def test_on_failure_reaching_its_limit_with_exit_0_is_a_clean_stop_not_a_give_up():
    d = _decide(_policy("on-failure:3"), 0, restarts=3)
    assert d == Decision(False, "on-failure: exited 0", False)


@pytest.mark.parametrize("value", ["on-failure", "on-failure:0"])
def test_on_failure_without_a_limit_keeps_restarting(value):
    assert _decide(_policy(value), 1, restarts=1_000_000).restart


@pytest.mark.parametrize("mode", ["always", "unless-stopped", "on-failure"])
def test_a_requested_stop_is_never_restarted(mode):
    d = _decide(_policy(mode), 137, desired="stopped")
    assert d == Decision(False, "stopped by request", False)


def test_a_daemon_shutdown_is_not_a_requested_stop_but_does_not_restart():
    d = _decide(_policy("always"), 143, daemon_stopping=True)
    assert d == Decision(False, "daemon stopping", False)
    assert d.state == "STOPPED"


@pytest.mark.parametrize("mode", ["always", "unless-stopped", "on-failure"])
def test_never_on_exit_codes_never_restart_under_every_mode(mode):
    policy = _policy(mode, **{NEVER_ON_EXIT_LABEL: "0,3"})
    assert _decide(policy, 3) == Decision(False, "exit code 3 never restarts", False)
    assert _decide(policy, 0).restart is False
    assert _decide(policy, 4).restart is True


def test_never_on_exit_0_keeps_always_from_restarting_a_clean_exit():
    policy = _policy("always", **{NEVER_ON_EXIT_LABEL: "0"})
    assert _decide(policy, 0).reason == "exit code 0 never restarts"
    assert _decide(policy, 1).restart


def test_the_intensity_limit_gives_up_past_n_restarts_within_t():
    policy = _policy("always", **{INTENSITY_LABEL: "5/60s"})
    now = 1000 * S
    five = [now - k * S for k in (1, 10, 20, 30, 59)]
    d = _decide(policy, 1, recent=five, now=now)
    assert d == Decision(False, "intensity: 6 restarts within 60s", True)
    assert d.state == "FAILED"
    assert _decide(policy, 1, recent=five[:4], now=now).restart


def test_restarts_older_than_the_intensity_window_do_not_count():
    policy = _policy("always", **{INTENSITY_LABEL: "5/60s"})
    now = 1000 * S
    old = [now - 60 * S, now - 61 * S, now - 100 * S]  # exactly T ago is outside
    recent = [now - S, now - 2 * S, now - 3 * S, now - 4 * S]
    assert _decide(policy, 1, recent=old + recent, now=now).restart
    assert not _decide(policy, 1, recent=[*old, *recent, now - 59 * S], now=now).restart


def test_restart_times_ahead_of_now_count_as_recent():
    policy = _policy("always", **{INTENSITY_LABEL: "1/10s"})
    assert not _decide(policy, 1, recent=[5 * S], now=S).restart


def test_the_intensity_limit_applies_to_on_failure_too():
    policy = _policy("on-failure:100", **{INTENSITY_LABEL: "2/1m"})
    d = _decide(policy, 1, restarts=2, recent=[0, S], now=2 * S)
    assert d == Decision(False, "intensity: 3 restarts within 60s", True)


def test_the_checks_go_in_order_policy_stop_daemon_exit_code_failure_limit_intensity():
    policy = _policy("on-failure:1", **{NEVER_ON_EXIT_LABEL: "0,3", INTENSITY_LABEL: "1/1h"})
    args = {"restarts": 5, "recent": [0, 0], "now": S}
    assert (
        _decide(policy, 3, desired="stopped", daemon_stopping=True, **args).reason
        == "stopped by request"
    )
    assert _decide(policy, 3, daemon_stopping=True, **args).reason == "daemon stopping"
    assert _decide(policy, 3, **args).reason == "exit code 3 never restarts"
    assert _decide(policy, 1, **args).reason == "on-failure: 1 restarts reached"
    assert _decide(_policy("always", **{INTENSITY_LABEL: "1/1h"}), 1, **args).give_up


def test_decide_refuses_an_unknown_desired_state():
    with pytest.raises(ValueError):
        _decide(_policy("always"), 1, desired="paused")


# --- backoff -----------------------------------------------------------------------

RANDS = [i / 1000 for i in range(1000)] + [0.999999999]


def test_the_delay_doubles_from_the_base_at_the_top_of_its_jitter():
    policy = RestartPolicy("always")
    top = [delay_s(policy, n, 0.999999999) for n in range(6)]
    assert top == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2], rel=1e-6)


def test_the_delay_is_capped_at_the_max():
    policy = RestartPolicy("always")  # moby's 100ms doubling to 1 min
    assert delay_s(policy, 9, 0.999999999) == pytest.approx(51.2, rel=1e-6)
    for attempt in (10, 11, 50, 64, 65, 10_000):
        assert delay_s(policy, attempt, 0.999999999) <= 60.0
        assert delay_s(policy, attempt, 0.0) == 30.0


@pytest.mark.parametrize("attempt", [0, 1, 3, 9, 10, 100])
def test_equal_jitter_stays_between_half_and_the_whole_step(attempt):
    policy = policy_from_labels({BACKOFF_BASE_LABEL: "250ms", BACKOFF_MAX_LABEL: "30s"})
    step = min(0.25 * 2**attempt, 30.0)
    delays = [delay_s(policy, attempt, r) for r in RANDS]
    assert all(step / 2 <= d < step for d in delays)
    assert min(delays) == step / 2
    assert max(delays) == pytest.approx(step, rel=1e-6)
    assert delays == sorted(delays)  # the jitter is rand, nothing else


def test_the_delay_grows_with_each_attempt_for_the_same_rand():
    policy = RestartPolicy("always")
    for r in (0.0, 0.3, 0.9):
        delays = [delay_s(policy, n, r) for n in range(12)]
        assert delays == sorted(delays)
        assert delays[-1] == delays[-2]  # at the cap


def test_the_delay_refuses_a_negative_attempt_or_a_rand_out_of_0_1():
    policy = RestartPolicy("always")
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError):
            delay_s(policy, 0, bad)
    with pytest.raises(ValueError):
        delay_s(policy, -1, 0.5)


def test_a_stable_run_resets_the_attempt_and_a_short_one_keeps_it():
    policy = RestartPolicy("always")  # reset after 10s, as Docker
    assert attempt_after_run(policy, 7, 9.999) == 7
    assert attempt_after_run(policy, 7, 10.0) == 0
    assert attempt_after_run(policy, 7, 3600.0) == 0
    assert attempt_after_run(policy, 0, 0.0) == 0


def test_reset_after_0_resets_after_every_run():
    policy = policy_from_labels({POLICY_LABEL: "always", RESET_AFTER_LABEL: "0"})
    assert attempt_after_run(policy, 5, 0.0) == 0


def test_a_crash_loop_backs_off_then_a_stable_run_starts_over():
    """The caller's loop: reset by the run, take the delay, count the attempt."""
    policy = policy_from_labels({POLICY_LABEL: "always", RESET_AFTER_LABEL: "5s"})
    attempt, delays = 0, []
    for ran_for in [0.1] * 12 + [6.0, 0.1]:
        attempt = attempt_after_run(policy, attempt, ran_for)
        delays.append(delay_s(policy, attempt, 0.999999999))
        attempt += 1
    assert delays[:3] == pytest.approx([0.1, 0.2, 0.4], rel=1e-6)
    assert delays[10:12] == pytest.approx([60.0, 60.0], rel=1e-6)
    assert delays[12:] == pytest.approx([0.1, 0.2], rel=1e-6)
