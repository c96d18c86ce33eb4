"""The station's HJ 212-2017 uplink to environmental platforms: :mod:`.core` (pure) and
:mod:`.uplink` (asyncio, its own connection to the station buffer)."""
