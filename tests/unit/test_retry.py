"""The retry decision (pure) and the retry loop (with a fake clock): no sleeps, no network."""

from __future__ import annotations

import dataclasses

import pytest

from moonstream.store.retry import ErrorKind, RetryPolicy, call_with_retries, retry_delay

POLICY = RetryPolicy(max_attempts=6, base=0.5, cap=3.0)
RETRYABLE = [ErrorKind.THROTTLED, ErrorKind.TIMEOUT, ErrorKind.SERVER, ErrorKind.CONNECTION]
FINAL = [ErrorKind.NOT_FOUND, ErrorKind.PRECONDITION, ErrorKind.CLIENT]


def test_every_kind_is_either_retryable_or_final() -> None:
    assert set(RETRYABLE) | set(FINAL) == set(ErrorKind)
    assert all(kind.retryable for kind in RETRYABLE)
    assert not any(kind.retryable for kind in FINAL)


@pytest.mark.parametrize("kind", FINAL)
@pytest.mark.parametrize("attempt", [1, 2, 5])
def test_answers_are_never_retried(kind: ErrorKind, attempt: int) -> None:
    assert retry_delay(attempt, kind, policy=POLICY, rand=0.5) is None


@pytest.mark.parametrize("kind", RETRYABLE)
def test_ceiling_doubles_then_caps(kind: ErrorKind) -> None:
    # rand just below 1 shows the ceiling: 0.5, 1, 2, then capped at 3.
    almost_one = 1.0 - 1e-12
    ceilings = [retry_delay(a, kind, policy=POLICY, rand=almost_one) for a in range(1, 6)]
    assert ceilings == pytest.approx([0.5, 1.0, 2.0, 3.0, 3.0])


def test_full_jitter_scales_the_ceiling_linearly() -> None:
    for rand in (0.0, 0.25, 0.5, 0.75):
        assert retry_delay(3, ErrorKind.SERVER, policy=POLICY, rand=rand) == pytest.approx(2.0 * rand)


def test_zero_draw_means_retry_at_once_not_give_up() -> None:
    assert retry_delay(1, ErrorKind.THROTTLED, policy=POLICY, rand=0.0) == 0.0


def test_budget_counts_the_first_attempt() -> None:
    assert retry_delay(POLICY.max_attempts - 1, ErrorKind.SERVER, policy=POLICY, rand=0.5) is not None
    assert retry_delay(POLICY.max_attempts, ErrorKind.SERVER, policy=POLICY, rand=0.5) is None
    assert retry_delay(POLICY.max_attempts + 10, ErrorKind.SERVER, policy=POLICY, rand=0.5) is None


def test_single_attempt_policy_never_retries() -> None:
    once = RetryPolicy(max_attempts=1, base=0.1, cap=1.0)
    assert retry_delay(1, ErrorKind.CONNECTION, policy=once, rand=0.5) is None


def test_huge_attempt_numbers_do_not_overflow() -> None:
    big = RetryPolicy(max_attempts=10**6, base=1.0, cap=30.0)
    assert retry_delay(5000, ErrorKind.SERVER, policy=big, rand=0.5) == pytest.approx(15.0)


def test_delay_is_bounded_by_cap_and_never_negative() -> None:
    for attempt in range(1, POLICY.max_attempts):
        for i in range(20):
            delay = retry_delay(attempt, ErrorKind.CONNECTION, policy=POLICY, rand=i / 20)
            assert delay is not None
            assert 0.0 <= delay <= POLICY.cap


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_is_one_based(attempt: int) -> None:
    with pytest.raises(ValueError, match="1-based"):
        retry_delay(attempt, ErrorKind.SERVER, policy=POLICY, rand=0.5)


@pytest.mark.parametrize("rand", [-0.1, 1.0, 1.5, float("nan")])
def test_rand_must_be_a_unit_draw(rand: float) -> None:
    with pytest.raises(ValueError, match="rand"):
        retry_delay(1, ErrorKind.SERVER, policy=POLICY, rand=rand)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"base": 0.0}, "base"),
        ({"base": -1.0}, "base"),
        ({"base": 2.0, "cap": 1.0}, "cap"),
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        POLICY.max_attempts = 3  # type: ignore[misc]


# -- call_with_retries ---------------------------------------------------------------------------


class Transient(Exception):
    pass


class Final(Exception):
    pass


def classify(exc: BaseException) -> ErrorKind | None:
    if isinstance(exc, Transient):
        return ErrorKind.SERVER
    if isinstance(exc, Final):
        return ErrorKind.PRECONDITION
    return None


class Script:
    """A function that raises the given exceptions in turn, then returns ``"ok"``."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_recovers_after_transient_failures_with_jittered_sleeps() -> None:
    sleeps: list[float] = []
    fn = Script(Transient(), Transient())
    result = call_with_retries(fn, classify, POLICY, sleep=sleeps.append, rand=lambda: 0.5)
    assert result == "ok"
    assert fn.calls == 3
    assert sleeps == pytest.approx([0.25, 0.5])


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    sleeps: list[float] = []
    last = Transient("last")
    fn = Script(*[Transient() for _ in range(POLICY.max_attempts - 1)], last, Transient())
    with pytest.raises(Transient) as info:
        call_with_retries(fn, classify, POLICY, sleep=sleeps.append, rand=lambda: 0.0)
    assert info.value is last
    assert fn.calls == POLICY.max_attempts
    assert len(sleeps) == POLICY.max_attempts - 1


def test_final_answers_are_raised_at_once() -> None:
    sleeps: list[float] = []
    fn = Script(Transient(), Final())
    with pytest.raises(Final):
        call_with_retries(fn, classify, POLICY, sleep=sleeps.append, rand=lambda: 0.5)
    assert fn.calls == 2
    assert len(sleeps) == 1


def no_sleep(delay: float) -> None:
    pytest.fail(f"slept {delay}s")


def no_rand() -> float:
    pytest.fail("drew a random number")


def test_unclassified_exceptions_propagate_untouched() -> None:
    fn = Script(KeyError("bug"))
    with pytest.raises(KeyError):
        call_with_retries(fn, classify, POLICY, sleep=no_sleep, rand=lambda: 0.5)
    assert fn.calls == 1


def test_success_first_time_never_sleeps() -> None:
    fn = Script()
    assert call_with_retries(fn, classify, POLICY, sleep=no_sleep, rand=no_rand) == "ok"
