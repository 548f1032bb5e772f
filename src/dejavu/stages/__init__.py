"""The pipeline's stages: data -> split -> crops -> train A/B -> embed -> evaluate -> neighbours ->
metrics -> report. Each is declared once (:mod:`dejavu.stages.declaration`); the order, dependencies,
fingerprints, reuse between run folders and the CLI's stage commands derive from the declarations
listed in :mod:`dejavu.stages.registry`."""

from dejavu.stages.declaration import Stage, fingerprint
from dejavu.stages.registry import COMMANDS, STAGE_BY_NAME, STAGES, upstream_of
from dejavu.stages.reuse import adopt_stages
from dejavu.stages.runner import finished_stages_hold, fingerprints, run_all, run_stage, set_threads

__all__ = ["COMMANDS", "STAGES", "STAGE_BY_NAME", "Stage", "adopt_stages", "finished_stages_hold", "fingerprint", "fingerprints",
           "run_all", "run_stage", "set_threads", "upstream_of"]
