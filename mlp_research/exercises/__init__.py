"""The chapter's exercises as experiments: sweeps, vmapped groups, hardware probes, search, report."""
