"""DANCE device agent: measures inference/training energy and latency on a board.

Runs on NVIDIA Jetson boards (first the TX2 with JetPack 4.6 and Python 3.6.9) and on
any Linux host.  The core is standard library only and valid Python 3.6; runtimes
(onnxruntime, torch, trtexec) are imported or started lazily, inside the workload
that needs them.  Run it as ``python3 -m device_agents ...`` from a copy of this
folder alone.
"""

__version__ = "0.1.0"

#: Version of the JSON documents written by ``measure``, ``power`` and ``probe``.
#: Bump on any incompatible change of keys or meanings.
SCHEMA_VERSION = 1
