"""The relay's benchmark (scripts/bench): sink, bare proxy, load generator, seeding,
look-up micro-benchmark, profile and report. Run it as `scripts/bench [--quick]`."""
