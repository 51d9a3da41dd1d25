"""The paper's experiments, above the library: Table 1 (:mod:`~promptrl.experiments.reproduce`), the ablations
(:mod:`~promptrl.experiments.ablations`) and the SAC expert training (:mod:`~promptrl.experiments.sac`)."""
