"""The audit: what each phase of a build really contains, recounted from its files.

    audit_build(OUT)        -> JSON-ready dict (per phase figures + findings)
    compare_audits(a, b, ..) -> deltas between two builds or two phases
    render_html(audit)      -> one self-contained HTML page
    row_view(DIR, n)        -> packed row n decoded, segment by segment
"""

from zaya_data.audit.compare import compare_audits, compare_phases
from zaya_data.audit.findings import AuditInputError, Finding
from zaya_data.audit.html import render_html
from zaya_data.audit.report import audit_build, audit_phase, find_phases
from zaya_data.audit.show import render_row, row_view

__all__ = [
    "AuditInputError", "Finding", "audit_build", "audit_phase", "compare_audits", "compare_phases",
    "find_phases", "render_html", "render_row", "row_view",
]
