"""Pure logic of the edge agent: read planning, bus timing, schedules. No I/O here."""
