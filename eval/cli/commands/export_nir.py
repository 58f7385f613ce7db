"""``tdbn-zoo export-nir``: the fused network as a NIR graph."""
from __future__ import annotations

from ._args import positive_float, positive_int, writable_file

HELP = "Export a pretrained tag or a checkpoint folder as a NIR graph (fused network, residual adds included)."
#: how to run the file written, shown in --help and after the export (snnTorch's importer, a batch at a time)
RUN_IT = "run it on a batch [N, C, H, W] with zoo.to_nir.run_nir(PATH, images) (snnTorch's NIR importer)"


def add_arguments(parser) -> None:
    parser.epilog = f"The graph's logits are the mean over T of its per-step output; {RUN_IT}."
    parser.add_argument("model", help="arch.tag (pretrained) or a checkpoint folder")
    parser.add_argument("out", type=writable_file, help="output .nir file (HDF5)")
    parser.add_argument("--input-size", type=positive_int, nargs=3, metavar=("C", "H", "W"), default=None,
                        help="input frame size (default: the checkpoint's input_size)")
    parser.add_argument("--dt", type=positive_float, default=None,
                        help="Euler step that the LIF time constants refer to (default 1e-4, snnTorch's)")


def run(args) -> int:
    from pathlib import Path

    import timm

    import zoo
    from zoo.errors import InvalidArgumentError
    from zoo.outputs import check_output_path
    from zoo.to_nir import DEFAULT_DT, export_nir

    check_output_path(args.out, inputs=[args.model], flag="out")

    if Path(args.model).is_dir():
        model = timm.create_model(f"local-dir:{args.model}", pretrained=True)
    elif Path(args.model).exists():
        raise InvalidArgumentError(f"{args.model} is a file: pass a checkpoint folder (model.safetensors + config.json) "
                                   f"or an arch.tag")
    else:
        model = zoo.create(args.model, pretrained=True)
    path = export_nir(model.eval(), args.out, args.input_size, DEFAULT_DT if args.dt is None else args.dt)
    print(f"wrote {path}: {args.model} (fused, T={model.T}) as a NIR graph; "
          f"logits = mean over T of its per-step output; {RUN_IT.replace('PATH', repr(str(path)))}")
    return 0
