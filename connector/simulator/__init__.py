"""A Kite-compatible ticker server, for running and testing the connector without a Kite account."""

from connector.simulator._market import Market, bundled_instruments, synthetic_instruments
from connector.simulator._server import Simulator, SimulatorConfig, running_simulator

__all__ = [
    "Market",
    "Simulator",
    "SimulatorConfig",
    "bundled_instruments",
    "running_simulator",
    "synthetic_instruments",
]
