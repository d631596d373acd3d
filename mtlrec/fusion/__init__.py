"""Fusing trained runs: rules that combine their predictions (:mod:`.rules`) and ``mtlrec-fuse``
(:mod:`.cli`)."""
