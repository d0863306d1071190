"""Suite-wide settings.

The networks in the tests are tiny (8-32 px, a few channels): one thread runs them faster
than two, and it keeps the suite's speed independent of whatever else the machine runs.
"""

import torch

torch.set_num_threads(1)
