"""Kite Connect market data → Apache Kafka, as Avro."""

__version__ = "0.1.0"
