"""Cleaning stages: quality filters, language id, exact/near/problem dedup,
decontamination and reasoning-sample validation.

Each stage is a pure function or a small callable class of `pyarrow.Table` + spec that
counts every record it drops in a `Ledger` (stage, reason, source, record id, location),
so it runs the same in a unit test and inside a Ray `map_batches`.

Per-batch (map) stages:
    QualityFilter(spec)(table, ledger) -> table              # stage "quality"
    LanguageFilter(spec.language, origin)(table, ledger)     # stage "language"
    Decontaminator(spec.decontaminate, origin)(table, ledger) -> table; .report()
    Validator(spec.validate)(table, ledger) -> table; .stats # stage "validate"
Build-wide dedup (map -> resolve -> map):
    signatures(table, spec, priority) -> sig table           # per batch
    resolve_duplicates(sig_tables, spec) -> drops            # in process, or
    resolve_duplicates_ray(ray_dataset_of_sigs, spec) -> drops
    problem_keys(table, priority) / resolve_problems(key_tables, spec.problem_dedup) -> drops
    apply_drop_list(table, drops, ledger) -> table           # stage "dedup"
"""

from zaya_data.clean.config import CleanSpec, parse_clean
from zaya_data.clean.decontam import Decontaminator, merge_reports
from zaya_data.clean.dedup import apply_drop_list, resolve_duplicates, signatures
from zaya_data.clean.dedup_ray import resolve_duplicates_ray
from zaya_data.clean.language import LanguageFilter
from zaya_data.clean.problems import group_stats, problem_keys, resolve_problems
from zaya_data.clean.quality import QualityFilter
from zaya_data.clean.validate import Validator

__all__ = [
    "CleanSpec", "parse_clean", "QualityFilter", "LanguageFilter", "Decontaminator", "merge_reports",
    "Validator", "signatures", "resolve_duplicates", "resolve_duplicates_ray", "apply_drop_list",
    "problem_keys", "resolve_problems", "group_stats",
]
