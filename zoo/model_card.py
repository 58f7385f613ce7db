"""The Hugging Face model card (README.md) of a checkpoint folder: YAML front matter from
``huggingface_hub.ModelCardData`` (license, library, tags, Hub dataset ids, model-index) and the card body
(architecture, data, recipe, measured results with the commands that made them, usage, citation).

A checkpoint made by a training run (``tdbn-zoo ship``) carries ``pretrained_cfg['run']``: its card states the
run, not the paper -- the model arguments, data (a Hub dataset id only for a complete, verified official copy)
and recipe as run, the paper's figure only as "the paper's configuration reports X" when the run departs from
it, and usage lines that load this checkpoint (its folder, or the Hub repo it is published to)."""
from __future__ import annotations

import json
from huggingface_hub import EvalResult, ModelCardData

# the Hub dataset ids of the datasets the tags name (a card's `datasets:` must be Hub ids to link)
HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist",
                "cifar10": "uoft-cs/cifar10", "imagenet-1k": "ILSVRC/imagenet-1k"}


def model_card(config: dict, *, name: str, repo_id: str, metrics: list[dict], extra: str = "",
               license: str = "mit", num_params: int | None = None) -> str:
    """README.md text: YAML front matter (huggingface_hub's ``ModelCardData``) and the card body, one section
    builder per ``##`` section."""
    cfg = config.get("pretrained_cfg", {})
    run = cfg.get("run") or {}
    lines = [
        *_front_matter(cfg, run, name, metrics, license), f"# {name}", "",
        f"A directly-trained deep spiking ResNet with threshold-dependent batch norm (tdBN), from "
        f"*{cfg.get('paper_name', 'Going Deeper With Directly-Trained Larger Spiking Neural Networks')}* "
        f"(Zheng et al., AAAI 2021, {cfg.get('paper_ids', 'arXiv:2011.05280')}), packaged by tdbn-zoo.",
    ]
    for section in (_model_section(config, cfg, run, num_params), _data_section(cfg, run), _recipe_section(cfg, run),
                    _results_section(cfg, run, metrics), _usage_section(name, repo_id, run), _CITATION):
        lines += ["", *section]
    if extra:
        lines += ["", extra.strip()]
    return "\n".join(lines) + "\n"


def _front_matter(cfg: dict, run: dict, name: str, metrics: list[dict], license: str) -> list[str]:
    """The YAML block between ``---`` lines: license, library, tags, the Hub dataset id, the model-index."""
    dataset = cfg.get("dataset")
    data_as_given = run.get("data") or {}
    hub_dataset = (data_as_given.get("hub_id") if run else HUB_DATASETS.get(dataset, dataset)) if dataset else None
    evals = [EvalResult(task_type="image-classification", dataset_type=m.get("dataset", dataset or "unknown"),
                        dataset_name=m.get("dataset", dataset or "unknown"), dataset_split=m.get("split"),
                        metric_type="accuracy" if m["name"].startswith(("top", "accuracy")) else m["name"],
                        metric_name=m["name"], metric_value=m["value"]) for m in metrics]
    data = ModelCardData(library_name="timm", license=license, model_name=name,
                         tags=["image-classification", "timm", "spiking-neural-network", "snn", "tdbn", "tdbn-zoo"],
                         datasets=[hub_dataset] if hub_dataset else None,
                         metrics=sorted({e.metric_type for e in evals}) or ["accuracy"],
                         eval_results=evals or None)
    return ["---", data.to_yaml(), "---"]


def _model_section(config: dict, cfg: dict, run: dict, num_params: int | None) -> list[str]:
    """Architecture, T, input, classes, the model arguments as run, the neuron, fused or not."""
    args = config.get("model_args", {})
    return [
        "## Model", "",
        f"- Architecture: `{config['architecture']}`, {num_params:,} parameters" if num_params else
        f"- Architecture: `{config['architecture']}`",
        f"- Time steps T = {args.get('T')}; input {cfg.get('input_size')}; {config.get('num_classes')} classes",
        *([f"- Model arguments as run: {', '.join(f'{k}={json.dumps(v)}' for k, v in run['model_kw'].items())}"]
          if run.get("model_kw") else []),
        f"- Neuron: iterative LIF (eq. 2-3), decay {args.get('tau_decay')}, threshold {args.get('v_th')}, "
        f"hard reset to 0; output = mean over T of the classifier (eq. 11)",
        ("- **Fused** (eq. 9-10): every tdBN is folded into the conv/linear before it (convs carry the bias; "
         "identity shortcuts keep a per-channel affine). This is the paper's full-spiking inference network."
         if args.get("fused") else
         "- **Unfused** training checkpoint: tdBN layers with running statistics, for fine-tuning."),
    ]


def _data_section(cfg: dict, run: dict) -> list[str]:
    """The dataset (as the run was given it) and its preprocessing."""
    data_as_given = run.get("data") or {}
    return [
        "## Data", "",
        f"- Dataset: {cfg.get('dataset') or 'not recorded'}" + (f": {data_as_given['note']}" if data_as_given else ""),
        f"- Preprocessing/augmentation: {cfg.get('augment', 'not recorded')}; mean {cfg.get('mean')}, "
        f"std {cfg.get('std')}",
    ]


def _recipe_section(cfg: dict, run: dict) -> list[str]:
    """The recipe as run (a run's card), else the tag's published recipe, and the command that trains it."""
    lines = ["## Recipe", ""]
    if run:  # the recipe as run (the tag's published recipe is the paper's, which this run may not follow)
        lines += [f"- {k}: {v}" for k, v in (run.get("recipe") or {}).items()]
        as_run = run.get("as_run") or {}
        lines += [f"- trained on: {as_run.get('device', 'unknown')} x{as_run.get('processes', 1)}, mixed precision "
                  f"{'on' if as_run.get('amp') else 'off'}"]
        if run.get("train_command"):
            lines += [f"- Train: `{run['train_command']}`"]
    else:
        recipe = cfg.get("recipe") or {}
        lines += [f"- {k}: {v}" + (" (mixed precision is used on CUDA only; a CPU run trains in float32)"
                                    if k == "amp" and v else "") for k, v in recipe.items()] or ["- not recorded"]
        if cfg.get("train_command"):
            lines += [f"- Train: `{cfg['train_command']}`"]
    return lines


def _results_section(cfg: dict, run: dict, metrics: list[dict]) -> list[str]:
    """The measured figures with their machine and command, then the paper's figure for this configuration."""
    dataset = cfg.get("dataset")
    lines = ["## Measured results", ""]
    if metrics:
        lines += ["| metric | value | dataset / split | machine | command |", "|---|---|---|---|---|"]
        lines += [f"| {m['name']} | {m['value']}{m.get('unit', '')} | {m.get('dataset', dataset)} / "
                  f"{m.get('split', '-')} | {m.get('machine', '-')} | `{m['command']}` |" for m in metrics]
        if any(m["name"] in ("accumulates_per_image", "macs_per_image") for m in metrics):
            lines += ["", "Synaptic operations per image, all T steps: `accumulates_per_image` are the additions "
                      "driven by spikes (ACs), `macs_per_image` the multiply-accumulates of layers fed real "
                      "values (the encoding conv, layers after average pooling), counted densely."]
    else:
        lines += ["No figure has been measured for this checkpoint yet."]
    if cfg.get("paper_top1") is not None:
        if run.get("departures"):
            lines += ["", f"The paper's configuration reports {cfg['paper_top1']}% top-1 (not measured here); this "
                          f"run departs from it: {'; '.join(run['departures'])}."]
        elif run:
            lines += ["", f"The paper reports {cfg['paper_top1']}% top-1 for this configuration."]
        else:
            lines += ["", f"The paper reports {cfg['paper_top1']}% top-1 for this configuration (not measured here)."]
    return lines


def _usage_section(name: str, repo_id: str, run: dict) -> list[str]:
    """Loading this checkpoint with zoo and with timm (a run's card: its folder and the Hub repo it goes to)."""
    this = f"local-dir:{run['folder']}" if run.get("folder") else name  # the name that loads this checkpoint
    if run:  # a run's repo is known once it is published (tdbn-zoo publish writes it into this line)
        repo_id = run.get("repo_id") or "<owner>/<repo>"
    return [
        "## Usage", "", "```python", "import zoo  # registers the architectures with timm",
        f"model = zoo.create({this!r}, pretrained=True)  # or neuron='spikingjelly' / 'snntorch'",
        "import timm",
        f"model = timm.create_model('hf-hub:{repo_id}', pretrained=True)"
        + ("  # the Hub repo it is published to (tdbn-zoo publish)" if run else ""),
        "logits = model(images)  # [N, C, H, W] (repeated over T) or [T, N, C, H, W] -> [N, classes]",
        "```",
    ]


_CITATION = [
    "## Citation", "", "```bibtex",
    "@inproceedings{zheng2021going,", "  title={Going Deeper With Directly-Trained Larger Spiking Neural Networks},",
    "  author={Zheng, Hanle and Wu, Yujie and Deng, Lei and Hu, Yifan and Li, Guoqi},",
    "  booktitle={Proceedings of the AAAI Conference on Artificial Intelligence}, year={2021}}", "```",
]
