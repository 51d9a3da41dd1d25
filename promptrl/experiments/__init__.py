"""The paper's experiments, above the library: Table 1 (:mod:`~promptrl.experiments.reproduce`, its tables in
:mod:`~promptrl.experiments.tables`, the paper's numbers in :mod:`~promptrl.experiments.paper`), the ablations
(:mod:`~promptrl.experiments.ablations`) and the SAC expert training (:mod:`~promptrl.experiments.sac`)."""
