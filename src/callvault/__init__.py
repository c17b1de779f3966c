"""callvault: stores call recordings in the storage their owner chooses."""

__version__ = "0.1.0"
