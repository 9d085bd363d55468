"""choreoscope: recover the real workflows of a distributed system from its OpenTelemetry traces.

One import package. The repository keeps its top-level folders (`collector/`, `analysis/`,
`dashboard/`, `sample_traces/`); pyproject.toml installs them as `choreoscope.collector`,
`choreoscope.analysis`, `choreoscope.dashboard` and `choreoscope.sample_traces`, so nothing generic
lands at the top of site-packages. `choreoscope.cli` is the console command.
"""

__version__ = "0.1.0"
