"""The label job on a Dask cluster: ``--runner DaskRunner --dask_client_address tcp://HOST:8786``.

Beam's own ``DaskRunner`` (``apache_beam.runners.dask.dask_runner``, Beam 2.78) translates a
pipeline into Dask bags, but as shipped it cannot run the label job:

1. **Tagged outputs are merged.** Its ParDo keeps one list of outputs per bundle and every
   consumer of a multi-output ParDo gets all of them: the chunk planner of ``--chunk-frames``
   sends whole videos and chunks to both branches (and when ``ClaimVideos`` still had a tagged
   output for quarantined videos, every video to label reached ``WriteVideoTables``:
   ``AttributeError: 'VideoRef' object has no attribute 'tracks'``).
2. **No parallelism.** ``Reshuffle`` becomes a no-op and a ParDo runs per bag partition, so a
   graph that starts from one element (``MatchVideos`` lists INPUT on a worker) runs every video in
   one partition, on one Dask worker.
3. **No metrics.** ``result.metrics()`` raises ``NotImplementedError`` (the job summary would
   say 0 videos).
4. Only the *last* translated transform's bag is computed, and the client is never closed.

:class:`DaskClusterRunner` subclasses it and translates the graph itself (Beam's translations
for every transform but ParDo and Reshuffle): each ParDo bundle returns ``(tag, value)`` pairs and
each output PCollection selects its tag; a bundle also returns its Beam metric updates (a
``MetricsContainer`` in scope while the DoFn runs), gathered into ``result.metrics()``; Reshuffle
repartitions the bag (``--dask_npartitions``, default: the cluster's worker threads), so videos
spread over the workers; every unconsumed PCollection is computed (in one graph: shared work is
done once). Like Beam's runner it supports the global window only, and a DoFn is set up and torn
down once per bag partition (the model itself is loaded once per worker process: RunInference
shares it through ``apache_beam.utils.shared``).

The launcher stays attached: the Dask futures belong to its client, so ``daq-label label`` waits
for the job, as on the local runner, and prints the same summary (from the gathered metrics).
"""

from __future__ import annotations

import functools
import itertools
import logging
from typing import Any, Iterable, Sequence

import dask.distributed as ddist  # before Beam's Dask module, which imports it only if present

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics.execution import MetricsContainer
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner
from apache_beam.runners.dask.overrides import _Reshuffle, dask_overrides
from apache_beam.runners.dask.transform_evaluator import (
    TRANSLATIONS,
    DaskBagWindowedIterator,
    Flatten,
    NoOp,
    get_windowed_value,
)
from apache_beam.runners.direct.direct_metrics import DirectMetrics
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils import counters

logger = logging.getLogger(__name__)

#: tag of the metric updates a bundle returns with its outputs
METRICS_TAG = "__daq_label_metrics__"
#: Dask key prefix of a ParDo's bundles, followed by the Beam step (visible in Dask's task stream)
TASK_PREFIX = "beam:"


# ---------------------------------------------------------------------------- a ParDo bundle


def _run_bundle(items: Iterable[Any], step: str, fn: Any, window_fn: Any, side_inputs: Any,
                args: Sequence[Any], kwargs: dict[str, Any]) -> list[tuple[Any, Any]]:
    """Run one bag partition through a DoFn: its outputs as ``(tag, value)`` (tag None: main),
    then ``(METRICS_TAG, MetricUpdates)``. Runs on a Dask worker."""
    outputs: list[tuple[Any, Any]] = []

    class TagReceiver(Receiver):
        def __init__(self, tag: Any) -> None:
            self.tag = tag

        def receive(self, windowed_value: Any) -> None:
            outputs.append((self.tag, windowed_value.value))

    class Receivers(dict):
        def __missing__(self, tag: Any) -> TagReceiver:
            receiver = self[tag] = TagReceiver(tag)
            return receiver

    receivers = Receivers()
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None],
                             tagged_receivers=receivers, per_element_output_counter=None,
                             output_batch_converter=None, process_yields_batches=False,
                             process_batch_yields_elements=False)
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn), handler, context=DoFnContext(step, state=None), side_inputs=side_inputs,
        input_args=list(args), input_kwargs=dict(kwargs), user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    container = MetricsContainer(step)
    sampler = statesampler.StateSampler(step, counters.CounterFactory())
    previous = statesampler.get_current_tracker()
    statesampler.set_current_tracker(sampler)  # Metrics.counter(...).inc() finds the container
    try:
        with sampler.scoped_state(step, "process", metrics_container=container):
            invoker.invoke_setup()
            try:
                invoker.invoke_start_bundle()
                for item in items:
                    invoker.invoke_process(get_windowed_value(item, window_fn))
                invoker.invoke_finish_bundle()
            finally:
                invoker.invoke_teardown()  # also when the bundle failed
    finally:
        statesampler.set_current_tracker(previous)
    outputs.append((METRICS_TAG, container.get_cumulative()))
    return outputs


def _has_tag(item: tuple[Any, Any], tag: Any) -> bool:
    return item[0] == tag


def _value(item: tuple[Any, Any]) -> Any:
    return item[1]


# ---------------------------------------------------------------------------- the graph


class _BagVisitor(PipelineVisitor):
    """Beam leaf transforms -> Dask bags, one bag per PCollection."""

    def __init__(self, bag_kwargs: dict[str, Any], lazy_side_inputs: bool, partitions: int) -> None:
        self.bag_kwargs = bag_kwargs
        self.lazy_side_inputs = lazy_side_inputs
        self.partitions = partitions
        self.bags: dict[pvalue.PValue, Any] = {}
        self.consumed: set[int] = set()
        self.metrics: list[Any] = []  # one bag of MetricUpdates per ParDo

    def visit_transform(self, node: AppliedPTransform) -> None:
        inputs = []
        for value in node.inputs:
            if isinstance(value, pvalue.PBegin):
                inputs.append(None)
            else:
                inputs.append(self.bags[value])
                self.consumed.add(id(value))
        side_inputs = self._side_inputs(node)
        transform = node.transform
        if type(transform) is beam.ParDo:  # exactly ParDo, as Beam's translation table
            self._par_do(node, inputs[0], side_inputs)
            return
        if isinstance(transform, _Reshuffle):
            bag = inputs[0].repartition(npartitions=max(self.partitions, inputs[0].npartitions))
        else:
            op = TRANSLATIONS.get(type(transform), NoOp)(node, bag_kwargs=self.bag_kwargs)
            one = len(inputs) == 1 and not isinstance(op, Flatten)
            bag = op.apply(input_bag=(inputs[0] if one else inputs) if inputs else None,
                           side_inputs=side_inputs or None)
        for output in node.outputs.values():
            self.bags[output] = bag

    def _side_inputs(self, node: AppliedPTransform) -> list[Any]:
        maps = []
        for side in node.side_inputs:
            self.consumed.add(id(side.pvalue))
            iterator = DaskBagWindowedIterator(self.bags[side.pvalue], side._window_mapping_fn,
                                               self.lazy_side_inputs)
            maps.append(SideInputMap(type(side), side._view_options(), iterator))
        return maps

    def _par_do(self, node: AppliedPTransform, bag: Any, side_inputs: list[Any]) -> None:
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        main = next(iter(node.main_inputs.values()))
        window_fn = main.windowing.windowfn if hasattr(main, "windowing") else None
        tagged = bag.map_partitions(_run_bundle, node.full_label, transform.fn, window_fn,
                                    side_inputs or None, list(args), dict(kwargs),
                                    token=f"{TASK_PREFIX}{node.full_label}")
        for tag, output in node.outputs.items():
            self.bags[output] = tagged.filter(functools.partial(_has_tag, tag=tag)).map(_value)
        self.metrics.append(tagged.filter(functools.partial(_has_tag, tag=METRICS_TAG)).map(_value))

    def sinks(self) -> list[Any]:
        """The bags of PCollections nothing consumes (each bag once)."""
        seen: dict[str, Any] = {}
        for output, bag in self.bags.items():
            if id(output) not in self.consumed:
                seen.setdefault(bag.name, bag)
        return list(seen.values())


class DaskClusterRunner(DaskRunner):
    """Beam's DaskRunner with tagged outputs, redistribution at Reshuffle, metrics, every sink
    computed and its client closed (see the module docstring)."""

    def run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions) -> "DaskJobResult":
        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        lazy = bool(dask_options.pop("lazy_side_inputs", False))
        client = ddist.Client(**dask_options)
        try:
            threads = sum(client.nthreads().values())
            partitions = int(bag_kwargs.get("npartitions") or 0) or max(1, threads)
            pipeline.replace_all(dask_overrides())
            visitor = _BagVisitor(bag_kwargs, lazy, partitions)
            pipeline.visit(visitor)
            sinks = visitor.sinks()
            # one compute call: one graph, so work shared by several sinks runs once (optimising
            # the collections first with dask.optimize runs a multi-output ParDo once per consumer)
            futures = client.compute([*sinks, *visitor.metrics])
        except BaseException:
            client.close()
            raise
        logger.info("Dask job on %s: %d worker(s), %d thread(s); Reshuffle -> %d partition(s)",
                    client.scheduler.address, len(client.nthreads()), threads, partitions)
        return DaskJobResult(client, futures[:len(sinks)], futures[len(sinks):])


class DaskJobResult(PipelineResult):
    """The futures of a Dask job; waiting gathers the metric updates and closes the client."""

    def __init__(self, client: Any, futures: list[Any], metric_futures: list[Any]) -> None:
        super().__init__(PipelineState.RUNNING)
        self.client = client
        self.futures = futures
        self.metric_futures = metric_futures
        self._metrics = DirectMetrics()

    def wait_until_finish(self, duration: int | None = None) -> str:
        if self._state != PipelineState.RUNNING:
            return self._state
        try:
            timeout = duration / 1000 if duration is not None else None
            for _future in ddist.as_completed(self.futures + self.metric_futures, timeout=timeout):
                pass
            for future in self.futures:
                if future.status == "error":
                    future.result()  # the worker's exception, raised here on the launcher
            bundle = itertools.count()
            for updates in self.client.gather(self.metric_futures):
                for update in updates:
                    key = next(bundle)
                    self._metrics.commit_physical(key, update)
                    self._metrics.commit_logical(key, update)
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            self.client.close()
        return self._state

    def cancel(self) -> str:
        self.client.cancel(self.futures + self.metric_futures)
        self.client.close()
        self._state = PipelineState.CANCELLED
        return self._state

    def metrics(self) -> Any:
        return self._metrics
