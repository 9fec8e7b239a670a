"""A/B tests and exploration on the served lists, and their analysis.

| module | job |
|---|---|
| ``assignment`` | which variant a user sees: a salted hash of the id (pure) |
| ``exploration`` | epsilon-greedy on the final slate, with each shown item's propensity (pure) |
| ``exposure`` | the exposure record (what was served, to whom, in which variant) and its Kafka log |
| ``outcomes`` | exposures joined with the clicks and watches that followed them (pure) |
| ``stats`` | per-variant figures with confidence intervals, the tests, sample-ratio mismatch, IPS/SNIPS (pure) |
| ``report`` | ``streamrec ab report``: the topics read, joined and summed up |
| ``simulate`` | ``streamrec ab simulate``: users of a synthetic world answering served lists from its ground truth |
"""
