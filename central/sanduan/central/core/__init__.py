"""Pure analytics of the central collector: county topology, data validity and time means,
section assessment and compensation rules. Plain data in, plain data out; no I/O."""
