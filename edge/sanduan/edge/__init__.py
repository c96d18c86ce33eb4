"""The station edge agent: polls Modbus RTU devices, buffers in SQLite, grades, forwards."""
