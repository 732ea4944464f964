"""Operating the platform: scheduling plans, alerts and the facts behind them, the health report."""
