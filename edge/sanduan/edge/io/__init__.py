"""The edge agent's I/O shells: serial buses (:mod:`.bus`), and the buffer and uplink."""
