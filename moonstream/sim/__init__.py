"""Market simulator with ground truth (issue 6, docs/simulator.md).

``run_simulation(symbols, start_minute, minutes, seed, data_url, rates, exchanges=...)`` writes
Binance USDT-M, Bybit v5 linear and OKX v5 swap raw minute files (the collector's format,
exchange-native payloads; the venues share one market) and a ground-truth record of every position
and liquidation with its venue; ``moonstream simulate`` is its command line.
"""

from moonstream.sim.params import SimRates, SymbolSpec, symbol_spec
from moonstream.sim.runner import SimReport, run_simulation

__all__ = ["SimRates", "SimReport", "SymbolSpec", "run_simulation", "symbol_spec"]
