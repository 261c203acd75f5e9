"""``leadflow bench``: throughput, latency and memory of the pipeline, against bare clients.

- :mod:`bench.pipeline` runs a campaign of N leads through the real worker
  (simulator at zero latency, no rate limits) and measures it post hoc from
  Kafka record timestamps (:mod:`bench.timeline`), with RSS and CPU from
  ``/proc`` (:mod:`bench.procstat`);
- :mod:`bench.baseline` is the bare consume → decode → transform → encode →
  produce loop over the same four hops, with aiokafka and with confluent-kafka;
- :mod:`bench.scenarios` holds the rate-limited and the scheduler scenarios;
- :mod:`bench.runner` repeats runs, takes medians and saves ``bench/results/``;
- :mod:`bench.report` writes ``docs/BENCHMARKS.md`` and ``docs/benchmarks.png``;
- :mod:`bench.records`, :mod:`bench.stats`, :mod:`bench.profile` and
  :mod:`bench.sysinfo` are the leads and transforms, the statistics, py-spy
  summaries and the machine description.

``bench/provider_overhead.py`` is a separate script (provider protection cost).
"""
