"""The board fleet: inventory, host keys, SSH transport, the pool actor, its journal,
the measurement cache and ``dance bench`` (DESIGN §6). One job per module:

* :mod:`.inventory`  ``configs/boards.yaml`` → validated :class:`~.inventory.Inventory`
* :mod:`.errors`     typed board failures (unreachable, auth, host key, timeout, …)
* :mod:`.hostkeys`   the platform's own known_hosts, fingerprints, enrolment
* :mod:`.transport`  one board: SSH (paramiko) or local subprocess; upload, run, fetch
* :mod:`.agentjob`   one measurement on a leased board: ship agent + model, run, parse
* :mod:`.journal`    SQLite journal of the queue, results and board facts
* :mod:`.cache`      measurement cache keyed by model hash, shape, runtime and board state
* :mod:`.pool`       :class:`~.pool.BoardPool` (one job per board) and its Ray actor
* :mod:`.scoring`    the Eq. 1 scoring pass as an ONNX model, so boards measure it too
* :mod:`.bench`      ``dance bench``: export, dispatch, expected J/image, MLflow
"""
