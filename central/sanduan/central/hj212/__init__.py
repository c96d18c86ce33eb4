"""The collector's HJ 212-2017 TCP server for third-party data loggers: :mod:`.core` (pure)
and :mod:`.server` (asyncio)."""
