"""Fault injection for the reliability suite (tests/test_faults.py): with
USERREP_FAULT_AT=<point> the process SIGKILLs itself when it reaches that point, the way a
crash, an OOM kill or a lost machine would stop it. Unset (always, outside the suite) a
point costs one environment lookup. One line per point in the code: fault_point("<point>").

Points:
  ingest:staged           every table validated and staged under data/.staging, nothing published
  ingest:before-journal   the commit journal written to a temp name, not yet in place
  ingest:journaled        the journal in place (committed), no file moved yet
  ingest:half-moved       the first staged file moved into place, the others not
  features:between-snapshots   the first of several feature snapshots written
  features:before-materialize  every snapshot written, the online store not loaded
  train:artifact-saved    the encoder artifact written, the batch not registered
  embed:published         a z_u file in place and online, the batch not yet marked ready
  embed:between-as-ofs    a backfill with one as-of published, the others not
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "USERREP_FAULT_AT"


def fault_point(name: str) -> None:
    """SIGKILL this process when USERREP_FAULT_AT names this point."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
