"""The export stage of an ended run: the Job `<run>-export` writes the ticket and report (and
uploads them, with spec.export.url). Its failure is its own condition (Exported False): the
run keeps the phase it ended with."""

from __future__ import annotations

from lth.api import ExportStatus, RunSpec
from lth.api.naming import RunLayout, export_name
from lth.plan.actions import CreateExport, Plan
from lth.plan.children import step_child
from lth.plan.context import Planning, RunFailed


def exportable(p: Planning) -> bool:
    """A search that ended with finished levels gets its ticket and report written; a run that
    failed before any level finished has nothing to export."""
    return p.status.export is not None or any(
        e.branch == "main" and e.phase == "Succeeded" for e in p.status.levels
    )


def export(p: Planning, spec: RunSpec) -> Plan:
    """Step the export Job of an ended run."""
    name = export_name(p.name)
    before = p.status.export
    was = before.phase if before else None  # step_child moves the entry forward in place
    where = f"{RunLayout.relative(p.name).ticket} on volume {spec.storage.claim_name}"
    upload = f" and {spec.export.url}" if spec.export.url else ""
    try:
        entry, verb = step_child(
            p, before, name, "Job", spec.retry.export.backoff_limit, failure_reason="ExportFailed"
        )
    except RunFailed as failure:
        assert before is not None, "a child that fails was created"
        p.status.export = before.model_copy(
            update={"phase": "Failed", "finish_time": p.now, "message": failure.message}
        )
        p.condition("Exported", "False", "ExportFailed", failure.message)
        p.event("Warning", "ExportFailed", failure.message)
        return p.result(spec)
    export = entry if isinstance(entry, ExportStatus) else ExportStatus(**entry.model_dump())
    p.status.export = export
    if verb in ("create", "restart"):
        p.actions.append(CreateExport(name, export.attempts))
        p.created(verb, f"Job {name} (the ticket and report to {where}{upload})", export.attempts)
    if verb == "succeeded":
        export.path, export.url = str(RunLayout.relative(p.name).ticket), spec.export.url
        if was != "Succeeded":
            message = f"ticket and report in {where}{upload}"
            p.condition("Exported", "True", "Exported", message)
            p.event("Normal", "Exported", message)
    else:
        p.condition("Exported", "False", "Exporting", f"Job {name} writes the ticket to {where}{upload}")
    return p.result(spec)
