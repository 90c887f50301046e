"""Runs: grids of cells on a local or Ray executor (`executor`), and which code made a result
(`provenance`)."""
