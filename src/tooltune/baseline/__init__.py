"""The rules-and-retrieval baseline (no neural network) that fine-tuned models are compared against.

`RulesModel(...).fit(train_units).predict(history) -> Call | Assistant`; see `model` for how it decides.
"""

from tooltune.baseline.model import RulesConfig, RulesModel
from tooltune.baseline.units import read_units, split_units

__all__ = ["RulesConfig", "RulesModel", "read_units", "split_units"]
