"""The run directory: state.json, typed stage outputs, the saved config, provenance.

Every reader and writer of a run directory goes through `RunDir` (commands, the engine, the
sweep summary, the Ray launcher); each stage's outputs are a dataclass (`llmops.run.outputs`).
"""

from llmops.run.outputs import (OUTPUT_TYPES, DataOutputs, DeployOutputs, ExportOutputs, Outputs,
                                SmokeOutputs, TrainingTask, TrainOutputs)
from llmops.run.rundir import STATE_FILE, RunContext, RunDir, RunLock, State

__all__ = ["OUTPUT_TYPES", "DataOutputs", "DeployOutputs", "ExportOutputs", "Outputs", "SmokeOutputs",
           "TrainingTask", "TrainOutputs", "STATE_FILE", "RunContext", "RunDir", "RunLock", "State"]
