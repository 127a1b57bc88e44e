"""The one path from (model, batch, policy, seed) to zero-cost scores, and what every result is keyed on.

* :mod:`~gradsign_pl.scoring.batch` -- the one batch unpacker: ``(inputs, targets)`` from tuples, dicts, dataloaders
  and datamodules; the number of classes.
* :mod:`~gradsign_pl.scoring.policy` -- :class:`ScoringPolicy`: how a candidate is prepared and its scores ordered.
* :mod:`~gradsign_pl.scoring.core` -- :func:`score_model`: one model, one batch, one policy and seed -> every
  proxy's result, failures as reasons.
* :mod:`~gradsign_pl.scoring.cache` -- resumable on-disk results keyed on everything they depend on.
* :mod:`~gradsign_pl.scoring.agreement` -- rank agreement (Kendall tau, Spearman rho) and rank averaging.
"""
