"""Search methods (spec.pruning.search.method), one module each, looked up by name.

Each entry says, from the spec alone, which levels a search has and how each main level
starts (`base.LevelPlan`). The planner, the cost model, validation, the report and the
trainer read the same entry, so a new method is a new module here, an entry in METHODS and
the name in `lth.api.pruning.SearchMethodName`, with its tests.
"""

from __future__ import annotations

from lth.api.search.base import Method
from lth.api.search.gradual import Gradual
from lth.api.search.imp import Imp
from lth.api.search.short_imp import ShortImp

METHODS: dict[str, Method] = {method.name: method for method in (Imp(), Gradual(), ShortImp())}
