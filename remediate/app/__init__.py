"""The app process: the CLI, `serve`, the warm executor, the Prefect server, `doctor`."""
