"""Detection quality against the generator's ground truth: in time, late, merged or missed, per fault type.

It drives the generator, the stream's transform and sink, and detection, so it belongs to none of
them. The method is described in docs/detection.md, section "Evaluation".
"""

from obslab.evaluation.chart import timeline_chart
from obslab.evaluation.matching import FAULT_KINDS, default_allowance, in_time_allowance, match_incidents
from obslab.evaluation.pooling import CASCADE_EFFECT, fault_group, pool, quantile, type_table, warmed_up
from obslab.evaluation.replay import window_versions
from obslab.evaluation.results import (EVALUATION_START, IN_TIME, LATE, MERGED, MISSED, OUTCOMES, BenignResult,
                                       CascadeResult, Evaluation, FaultResult, IncidentResult)
from obslab.evaluation.runs import CHUNK_EVENTS, EvaluationRun, evaluate, evaluate_many

__all__ = ["BenignResult", "CASCADE_EFFECT", "CHUNK_EVENTS", "CascadeResult", "EVALUATION_START", "Evaluation",
           "EvaluationRun", "FAULT_KINDS", "FaultResult", "IN_TIME", "IncidentResult", "LATE", "MERGED", "MISSED",
           "OUTCOMES", "default_allowance", "evaluate", "evaluate_many", "fault_group", "in_time_allowance",
           "match_incidents", "pool", "quantile", "timeline_chart", "type_table", "warmed_up", "window_versions"]
