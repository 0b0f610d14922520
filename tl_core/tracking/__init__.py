"""Runs in MLflow: where the tracking server is (``settings``), logging a run live as it trains or after the
fact (``mlflow_runs``), the run's model as an MLflow model that takes raw pixels (``pyfunc_model``) and the
pictures logged beside it (``figures``).

Off unless a tracking URI is configured. Only ``settings`` is imported on every run; MLflow itself is imported
when logging is on.
"""
