"""The calibrate job on a simulated market with a known leverage mix (docs/simulator.md).

One hour of BTC (Binance feed, busy: many cascades and opens) from a uniform starting version, four
15-minute windows. Checked: every version is valid (enabled weights sum to 1, the disabled 10x stays
0, ratio clamp and cap hold between consecutive versions, entropy floor), re-running windows writes
nothing, the pointer only moves forward, ``weights_for_minute`` picks the newest version ending at or
before a minute, and the Lambda handler's event forms.

Convergence toward the true mix is *measured and printed*, not asserted: with minute bars as entry
estimates, the levels of tiers 75x-250x interleave within a minute's range, so the attribution
cannot separate them well, and the engine's level model (``1/L + BUFFER``) differs from the
simulated venue's (``1/L - mmr``). The measured L1 distances are in docs/engines.md "Calibrator".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from moonstream.jobs import calibrate as cj, handlers
from moonstream.jobs.config import JobConfig
from moonstream.jobs.engines import calibrator as cal
from moonstream.jobs.engines.leverage import leverage_config
from moonstream.jobs.minute import JobContext, run_minute
from moonstream.publish.encode import canonical_json
from moonstream.sim import SimRates, run_simulation
from moonstream.timeutil import parse_minute

pytestmark = [pytest.mark.integration]

START = parse_minute("2024-03-05T00:00")
MIX = {
    5: 1.0,
    10: 1.0,
    20: 1.0,
    25: 1.0,
    50: 1.0,
    75: 1.0,
    100: 4.0,
    125: 1.0,
    150: 0.5,
    200: 0.25,
    250: 0.25,
}
RATES = SimRates(leverage_weights=MIX, cascades_per_day=48, opens_per_sec=6)
CONFIG = leverage_config("BTC")
ENABLED = CONFIG.enabled_tiers


def _truth() -> dict[int, float]:
    total = sum(MIX[t] for t in ENABLED)
    return {t: MIX[t] / total for t in ENABLED}


def _l1(weights: dict[int, float]) -> float:
    truth = _truth()
    return math.fsum(abs(weights[t] - truth[t]) for t in ENABLED)


def _seed_uniform(ctx: JobContext) -> dict[int, float]:
    uniform = {t: (0.0 if t in CONFIG.disabled else 1 / len(ENABLED)) for t in CONFIG.tiers}
    doc = {
        "schema_version": cj.SCHEMA_VERSION,
        "engine_version": cal.ENGINE_VERSION,
        "symbol": "BTC",
        "window_end_minute": START,
        "weights": {str(t): w for t, w in uniform.items()},
        "memory": {},
    }
    ctx.data.create(cj.version_key("BTC", START), canonical_json(doc), cj._META)
    return uniform


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("calibrate")
    data_url = f"file://{root / 'data'}"
    run_simulation(["BTC"], START, 60, 11, data_url, RATES)
    config = JobConfig(data_url=data_url, site_url=f"file://{root / 'site'}", symbols=("BTC",))
    ctx = JobContext.open(config)
    uniform = _seed_uniform(ctx)
    results = [cj.run_calibration(ctx, "BTC", START + 15 * k) for k in range(1, 5)]
    return {"root": root, "ctx": ctx, "config": config, "uniform": uniform, "results": results}


def test_versions_are_valid(run: dict[str, Any]) -> None:
    previous = run["uniform"]
    for result in run["results"]:
        assert result.written and result.pointer_moved
        w = result.weights
        assert w[10] == 0.0
        assert math.fsum(w.values()) == pytest.approx(1.0, abs=1e-9)
        assert max(w.values()) <= cal.MAX_WEIGHT + 1e-9
        for t in ENABLED:
            assert cal.RATIO_MIN - 1e-6 <= w[t] / previous[t] <= cal.RATIO_MAX + 1e-6
        assert cal.entropy({t: w[t] for t in ENABLED}) >= cal.ENTROPY_FLOOR - 1e-9
        assert result.stats["events"] > 0  # the busy market liquidates in every window
        previous = w


def test_convergence_is_measured(run: dict[str, Any]) -> None:
    before = _l1(run["uniform"])
    after = [_l1(r.weights) for r in run["results"]]
    attributable = [r.stats["attributable"] for r in run["results"]]
    print(f"L1 to the true mix: start {before:.4f}, after each window {[round(x, 4) for x in after]}")
    print(f"events {[r.stats['events'] for r in run['results']]}, attributable {attributable}")
    # Stability, not convergence (see the module docstring): four clamped, anchored windows move
    # the weights only a little.
    assert abs(after[-1] - before) < 0.1


def test_idempotent_rerun(run: dict[str, Any]) -> None:
    ctx = run["ctx"]
    root: Path = run["root"]
    files = {p: p.read_bytes() for p in (root / "data" / "state").rglob("*") if p.is_file()}
    for k in (1, 3, 4):
        again = cj.run_calibration(ctx, "BTC", START + 15 * k)
        assert not again.written and not again.pointer_moved
        assert again.weights == run["results"][k - 1].weights
    assert {p: p.read_bytes() for p in (root / "data" / "state").rglob("*") if p.is_file()} == files


def test_recomputed_window_has_the_same_bytes(run: dict[str, Any]) -> None:
    """A window's version depends only on earlier versions, never on the pointer."""
    ctx = run["ctx"]
    doc, prev = cj.compute_window(ctx.data, "BTC", START + 30)
    assert prev == cj.version_key("BTC", START + 15)
    assert canonical_json(doc) == ctx.data.read_bytes(cj.version_key("BTC", START + 30))


def test_pointer_only_moves_forward(run: dict[str, Any]) -> None:
    ctx = run["ctx"]
    pointer = json.loads(ctx.data.read_bytes(cj.pointer_key("BTC")))
    assert pointer["window_end_minute"] == START + 60
    assert not cj._advance_pointer(ctx.data, "BTC", START + 30, cj.version_key("BTC", START + 30))
    assert json.loads(ctx.data.read_bytes(cj.pointer_key("BTC")))["window_end_minute"] == START + 60


def test_weights_for_minute(run: dict[str, Any]) -> None:
    store = run["ctx"].data
    results = run["results"]
    assert cj.weights_for_minute(store, "BTC", START - 1) is None
    assert cj.weights_for_minute(store, "BTC", START + 14) == {str(t): w for t, w in run["uniform"].items()}
    assert cj.weights_for_minute(store, "BTC", START + 15) == {
        str(t): w for t, w in results[0].weights.items()
    }
    assert cj.weights_for_minute(store, "BTC", START + 59) == {
        str(t): w for t, w in results[2].weights.items()
    }
    assert cj.weights_for_minute(store, "BTC", START + 500) == {
        str(t): w for t, w in results[3].weights.items()
    }
    assert cj.weights_for_minute(store, "ETH", START + 500) is None


def test_handler_event_forms(run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    config: JobConfig = run["config"]
    monkeypatch.setenv("MOONSTREAM_DATA_URL", config.data_url)
    monkeypatch.setenv("MOONSTREAM_SITE_URL", config.site_url)
    monkeypatch.setenv("MOONSTREAM_SYMBOLS", "BTC")
    out = handlers.calibrate_handler({"symbol": "BTC", "window_end": "2024-03-05T00:30"}, None)
    assert out["results"][0]["written"] is False and out["window_end"] == "2024-03-05T00:30:00Z"
    out = handlers.calibrate_handler({"time": "2024-03-05T00:46:20Z"}, None)
    assert out["window_end"] == "2024-03-05T00:45:00Z" and out["results"][0]["symbol"] == "BTC"
    with pytest.raises(ValueError):
        handlers.calibrate_handler({"symbol": "BTC", "window_end": "2024-03-05T00:31"}, None)
    with pytest.raises(handlers.HandlerError):
        handlers.calibrate_handler({"symbol": "DOGE", "window_end": "2024-03-05T00:30"}, None)


def test_window_from_the_minute_jobs_equals_a_window_read_from_the_store(run: dict[str, Any]) -> None:
    """The minute jobs keep each minute's calibration inputs; a calibration from them writes the
    same bytes as one that reads the window's raw files again (the fixture's versions did)."""
    ctx = JobContext.open(run["config"])  # a fresh process: nothing cached yet
    end = START + 60
    state = None
    for minute in range(end - 15, end):
        state, _ = run_minute(ctx, "BTC", minute, state=state, publish=False)
    hits: list[int] = []

    def cached(minute: int) -> cj.WindowMinute | None:
        inputs = ctx.window_minutes.get("BTC", minute)
        if inputs is not None:
            hits.append(minute)
        return inputs

    doc, _ = cj.compute_window(ctx.data, "BTC", end, cached=cached)
    assert hits == list(range(end - 15, end))
    assert canonical_json(doc) == ctx.data.read_bytes(cj.version_key("BTC", end))
    run_minute(ctx, "BTC", end, state=state, publish=False)
    assert ctx.window_minutes.get("BTC", end - 15) is None  # bounded to the last window
    assert ctx.window_minutes.get("BTC", end - 14) is not None
