"""Privacy accounting, the per-dataset budget ledger, fast clipping, empirical audits."""
