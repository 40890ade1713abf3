"""``--engine dask``: the same run on a Dask distributed cluster.

:mod:`.executor` is the coordinator's side (a ``LocalCluster`` or a running scheduler,
checks up front, one Dask task per unit, progress and stops); :mod:`.task` is what a
worker runs for one unit; :mod:`.wire` is the plain data that travels between them.
Nothing here is imported unless ``--engine dask`` is asked for.
"""
