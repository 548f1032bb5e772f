"""The run's report: figures (``figures``) and the self-contained ``report.html`` (``html``).

Submodules are not imported here so that importing the package does not pull in matplotlib/PIL.
"""
