"""sanduan's one exception tree.

Every error sanduan raises on purpose derives from :class:`SanduanError`; third-party exceptions
are translated into one of these at the boundary where they occur. Messages name the object
(file and key, station, device, register, parameter) and, where there is one, the fix::

    SanduanError
    ├── ConfigError            a configuration or data file is wrong (file, key, reason)
    ├── InputError             a value given by a user or a device is unusable
    │   ├── UnknownParameterError
    │   └── InvalidValueError
    ├── WireFormatError        a message cannot be encoded or decoded (reason)
    │   └── Hj212Error         an HJ 212-2017 packet is malformed (reason)
    ├── DeviceError            a Modbus device or serial bus failed (bus, slave, register)
    ├── StoreError             a database could not be opened, migrated or written
    └── LinkError              the MQTT link failed in a way the caller must hear about
"""

from __future__ import annotations


class SanduanError(Exception):
    """Base of every error sanduan raises on purpose."""


class ConfigError(SanduanError):
    """A configuration or data file is wrong; names the file, the key and the reason."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class InputError(SanduanError):
    """A value given by a user or a device cannot be used."""


class UnknownParameterError(InputError):
    """A parameter name, alias or HJ 212 code that the registry does not know."""

    def __init__(self, name: str, hint: str = "") -> None:
        self.name = name
        msg = f"unknown parameter {name!r}"
        if hint:
            msg += f": {hint}"
        super().__init__(msg)


class InvalidValueError(InputError):
    """A value that cannot be graded (for example a negative concentration)."""

    def __init__(self, parameter: str, value: float, reason: str) -> None:
        self.parameter = parameter
        self.value = value
        self.reason = reason
        super().__init__(f"{parameter}={value!r}: {reason}")


class WireFormatError(SanduanError):
    """A wire message is malformed; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"wire format: {reason}")


class Hj212Error(WireFormatError):
    """An HJ 212-2017 packet cannot be decoded or encoded; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        Exception.__init__(self, f"HJ 212: {reason}")


class DeviceError(SanduanError):
    """A Modbus device or its serial bus failed."""


class StoreError(SanduanError):
    """A database could not be opened, migrated or written."""


class LinkError(SanduanError):
    """The MQTT link failed in a way the caller must hear about."""
