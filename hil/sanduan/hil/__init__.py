"""The hardware-in-the-loop rig: simulated Modbus RTU devices, faults, county scenarios."""
