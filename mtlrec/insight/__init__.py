"""Looking inside trained multi-task models: gate utilisation and expert collapse (:mod:`.gates`)."""
