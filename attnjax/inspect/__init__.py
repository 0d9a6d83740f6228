"""Looking inside trained models and runs: curves and attention figures."""
