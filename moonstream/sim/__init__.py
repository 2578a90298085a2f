"""Market simulator with ground truth (issue 6, docs/simulator.md).

``run_simulation(symbols, start_minute, minutes, seed, data_url, rates)`` writes Binance USDT-M raw
minute files (the collector's format, exchange-native payloads) and a ground-truth record of every
position and liquidation; ``moonstream simulate`` is its command line.
"""

from moonstream.sim.params import SimRates, SymbolSpec, symbol_spec
from moonstream.sim.runner import SimReport, run_simulation

__all__ = ["SimRates", "SimReport", "SymbolSpec", "run_simulation", "symbol_spec"]
