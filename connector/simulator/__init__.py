"""A Kite-compatible ticker server, for running and testing the connector without a Kite account."""

from connector.simulator._config import SimulatorConfig
from connector.simulator._fanout import Fanout, Outgoing, Subscriber
from connector.simulator._http import ConnectionInfo
from connector.simulator._market import Market, bundled_instruments, in_mode, synthetic_instruments
from connector.simulator._server import Simulator, running_simulator

__all__ = [
    "ConnectionInfo",
    "Fanout",
    "Market",
    "Outgoing",
    "Simulator",
    "SimulatorConfig",
    "Subscriber",
    "bundled_instruments",
    "in_mode",
    "running_simulator",
    "synthetic_instruments",
]
