"""The run's report: figures (``figures``) and the self-contained ``report.html`` (``html``), laid out by
the Jinja2 templates in ``templates/`` (``base.html`` is shared with the sweep's page, ``sweep``).

Submodules are not imported here so that importing the package does not pull in matplotlib/PIL.
"""
