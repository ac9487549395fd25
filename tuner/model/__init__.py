"""The two-tower retrieval model: `build_model(cfg, split)` is the entry point."""
from tuner.model.frequency import StreamingFrequencyEstimator
from tuner.model.retrieval import TwoTowerModel, build_model

__all__ = ["StreamingFrequencyEstimator", "TwoTowerModel", "build_model"]
