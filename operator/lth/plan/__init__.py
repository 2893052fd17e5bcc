"""The planner: a pure function from (spec, status, observed children, now) to the next
actions and the new status.

The kopf operator and the local runner both call `plan` and only carry out what it returns,
so both run the same state machine. It reads nothing and writes nothing, and imports nothing
of ours but `lth.api`. The pass is split by concern: accepting the spec and freezing its
fields (acceptance), resolving a transfer's ticket (tickets), stepping one child with its
retries (children), the search policy (levels), the instability analysis that chooses the
rewind point of rewindTo auto (stability), the run's summary, phase and end (summary),
the export stage (export), what everything costs (cost), and the actions an executor
carries out (actions); `planner.plan` ties them together.
"""

from __future__ import annotations

from lth.plan.actions import (
    Action as Action,
)
from lth.plan.actions import (
    Create as Create,
)
from lth.plan.actions import (
    CreateExport as CreateExport,
)
from lth.plan.actions import (
    CreateLevelJob as CreateLevelJob,
)
from lth.plan.actions import (
    CreatePreprocessing as CreatePreprocessing,
)
from lth.plan.actions import (
    CreateStabilityJob as CreateStabilityJob,
)
from lth.plan.actions import (
    DeleteChild as DeleteChild,
)
from lth.plan.actions import (
    EmitEvent as EmitEvent,
)
from lth.plan.actions import (
    Plan as Plan,
)
from lth.plan.planner import plan as plan
from lth.plan.summary import progress_summary as progress_summary
from lth.plan.summary import record_progress as record_progress
from lth.plan.tickets import ticket_to_resolve as ticket_to_resolve
