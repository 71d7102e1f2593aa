"""The on-prem inference worker (a separate process; never imports ``gateway``).

Public modules (import them directly; this package imports nothing heavy on its own):

- :mod:`inference.config`: ``WorkerConfig`` (YAML → frozen pydantic), ``load_config``,
  ``check_runtime`` (refuses levers this machine cannot honour).
- :mod:`inference.server`: ``create_app(config)``, the OpenAI-compatible Starlette app.
- :mod:`inference.serve`: ``serve(config)``, uvicorn with mTLS (``bastion worker``).
- :mod:`inference.scheduler`: the continuous-batching ``Scheduler`` (design notes inside).
- :mod:`inference.loading`: ``load_served_model`` (encrypted artifact or plaintext dir).
- :mod:`inference.quantize`: int8 quantization and its quality report
  (``bastion model quantize``).
- :mod:`inference.metrics`: the Prometheus series.
- :mod:`inference.errors`: the exception tree.
- :mod:`inference.artifact`: the encrypted model artifact (HSM engineer's part).
"""
