"""One module per `mesh_ctl` command. Adding a command = add ``commands/<name>.py`` + a line below.

Each module provides (its docstring is the command's ``--help`` description)::

    def add_arguments(parser: ArgumentParser) -> None
    def run(args: Namespace) -> int                the exit code

Only the module of the command being run is imported, so `mesh_ctl status` does not pay for what `up`
needs (certificates, Envoy protos). Module names use ``_`` where the command uses ``-`` (``set-weight`` ->
``set_weight.py``).
"""

COMMANDS: dict[str, str] = {
    "up": "start the local mesh (payment v1 + v2, a load client, a sidecar each)",
    "down": "stop the local mesh (and clean up after a crashed one)",
    "status": "list the workloads of the local mesh and the latest traffic summary",
}
