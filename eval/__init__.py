"""The tdbn-zoo harness: evaluation, training, data pipelines and the ``tdbn-zoo`` command line.

Where things live (each sub-package's ``__init__`` imports nothing, so importing one module costs only that
module; the CLI's ``--help`` imports no torch)::

    eval/
      cli/              the ``tdbn-zoo`` command line: main() and one module per subcommand in cli/commands/
      measure/          evaluation proper
        harness.py        evaluate(), evaluate_over_T(), load_model(), calibrate_norms()
        metrics.py        top-k, spike recording (firing rates) through the neuron protocol
        synops.py         synaptic operations (ACs/MACs) and the energy model
        per_class.py      per-class accuracy and confusion matrices
        report.py         text tables of results
        plots.py          accuracy-vs-T and firing-rate figures (matplotlib)
        profiling.py      timing, peak memory and machine description
        neurobench.py     NeuroBench metrics on zoo models
      train/            training
        trainer.py        Trainer, TrainConfig (exact resume, DDP)
        checkpoint.py     training checkpoints (safetensors + JSON state)
        sampling.py       resumable batch order and seeded augmentation
        ranges.py         valid ranges of numeric settings (TrainConfig and the CLI)
        presets.py        the paper's training recipes
        datasets.py       a preset's train/test datasets from local files
        finetune.py       fine-tuning a (fused or unfused) model on new data
        device_counters.py  spike counters kept on the device while training
        compare_runs.py   tables comparing runs from their metrics.jsonl
      data/             datasets
        images.py         MNIST, Fashion-MNIST, CIFAR-10/100, ImageNet folders from local files; the data-root
                          search; the shipped 500-image subset
        smoke.py          tiny files in each dataset's on-disk format, for tests and the reproduce smoke run
        events/           event-camera data: readers, framing to [T, N, 2, H, W], datasets, a simulated sensor
      bench/            benchmarking
        runner.py         ``tdbn-zoo bench``: builds compared on the same function, time and memory ratios
        reference_models.py  the same network in SpikingJelly, snnTorch and as an ANN, for the benchmark
        memory.py         what an activation budget buys: largest batch and T per build (``bench --budget-mib``)
      release/          release tooling
        ship.py           fuse a finished run, measure it, write checkpoint + card into weights/
        reproduce.py      train -> ship -> eval for a paper tag, in one command
        results.py        the results table and model cards from every shipped checkpoint

The harness's main names are importable from here: ``from eval import evaluate``.
"""

_HARNESS = ("evaluate", "evaluate_over_T", "EvalResult", "load_model", "calibrate_norms")


def __getattr__(name):  # ``from eval import evaluate`` without importing torch for every CLI start
    if name in _HARNESS:
        from .measure import harness
        return getattr(harness, name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
