"""Batches split across the replicas of a ``tf.distribute`` strategy.

Attacks, evaluations and certification run their compiled batch kernels through
:func:`split_run`: under ``with strategy.scope():`` (mirrored GPUs or logical CPUs,
multi-worker, TPU) each batch is cut into one contiguous part per replica (replica ``r`` of
``R`` takes examples ``n*r//R`` to ``n*(r+1)//R``: sizes differ by at most one, so any
batch size works), the kernel runs on every part with ``strategy.run`` inside one
``tf.function``, and the parts are gathered back in order. Outside a scope (or under the
default strategy) the kernel is simply called, so the single-device path has no overhead.
Randomness is drawn before the split, on the whole batch, so a seeded result does not
depend on the number of replicas.
"""

import tensorflow as tf

__all__ = ["active_strategy", "num_replicas", "split_run"]


def active_strategy():
    """The strategy of the enclosing ``strategy.scope()`` if it distributes (a non-default
    strategy in cross-replica context), else None."""
    if not tf.distribute.has_strategy() or not tf.distribute.in_cross_replica_context():
        return None
    return tf.distribute.get_strategy()


def num_replicas() -> int:
    """Replicas a batch is split across here (1 outside a distributing scope)."""
    strategy = active_strategy()
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def split_run(fn, batched, *args):
    """``fn(*batched, *args)`` with the batch-first tensors ``batched`` split across the
    active strategy's replicas and the outputs (a tensor or a tuple of tensors, batch
    first) gathered back in order.

    Args:
      fn: a traceable function (e.g. a ``tf.function``) of batch-first tensors followed by
        ``args``; it must treat examples independently (a model in inference mode).
      batched: tensors sharing their first dimension (None entries are passed as None);
        a batch with fewer examples than replicas runs on the current device.
      *args: passed unchanged to every replica (e.g. the model, flags).

    Returns:
      what ``fn`` returns, for the whole batch.
    """
    strategy = active_strategy()
    n = next((t.shape[0] for t in batched if t is not None), None)
    if strategy is None or (n is not None and n < strategy.num_replicas_in_sync):
        return fn(*batched, *args)  # a batch smaller than the replica count is not split
    return _split_run(strategy, fn, tuple(batched), args)


@tf.function(reduce_retracing=True)
def _split_run(strategy, fn, batched, args):
    replicas = strategy.num_replicas_in_sync
    present = [t for t in batched if t is not None]
    n = tf.shape(present[0], out_type=tf.int64)[0]

    def replica_fn(*full):
        r = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        lo, hi = n * r // replicas, n * (r + 1) // replicas
        parts = [None if t is None else t[lo:hi] for t in full]
        return fn(*parts, *args)

    out = strategy.run(replica_fn, args=batched)
    if len(strategy.extended.worker_devices) == replicas:  # every replica is on this host
        return tf.nest.map_structure(
            lambda v: tf.concat(strategy.experimental_local_results(v), axis=0), out)
    return tf.nest.map_structure(lambda v: strategy.gather(v, axis=0), out)  # other hosts
