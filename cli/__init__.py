"""The ``fedbcs`` command line (installed as the ``fedbcs_cli`` package)."""
