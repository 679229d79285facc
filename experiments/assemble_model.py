"""A model folder assembled from the parts of others (how a fine-tuned decoder and a fine-tuned prior become one model).

    python benchmarks/assemble_model.py OUT_DIR --name NAME --encoder M1 --decoder M2 --prior M3

Each M is a shipped model's name or a model folder (the exports of decoder_finetune.py, prior_finetune.py,
cost_scale.py --export). The parts:
- encoder side, from --encoder: the encoder, the codebooks and their code costs (`rvq`), the coarse codes and
  the config: what decides the indices;
- decoder side, from --decoder: the decoder, the stage gains and the post-filter: what turns indices into pixels;
- the integer prior, from --prior.
The three must agree where they meet: the same codebooks (the prior's integer vectors are made from them, and the
decoder was trained on them) and the same architecture. Anything else is refused. The training reports are
kept side by side in the new training_report.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DECODER_SIDE = ("decoder.", "gains.", "postfilter.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the new model folder (must not exist)")
    ap.add_argument("--name", required=True, help="the new model's name (written into its files' headers)")
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--decoder", required=True)
    ap.add_argument("--prior", required=True)
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"Error: {args.out} exists")

    import torch

    from vqcodec.codec import VQCodec, resolve_model_dir
    from vqcodec.config import ModelConfig
    from vqcodec.training_cli import export_model

    dirs = {part: resolve_model_dir(getattr(args, part)) for part in ("encoder", "decoder", "prior")}
    models = {part: VQCodec.load(d) for part, d in dirs.items()}
    enc, dec, pri = models["encoder"], models["decoder"], models["prior"]
    arch = lambda c: c.cfg.to_dict() | {"name": ""}                             # noqa: E731
    for part in ("decoder", "prior"):
        if arch(models[part]) != arch(enc):
            raise SystemExit(f"Error: the {part} model's config differs from the encoder model's")
    for part in ("decoder", "prior"):
        for a, b in zip(enc.autoencoder.rvq.stages, models[part].autoencoder.rvq.stages):
            if not torch.equal(a.codebook, b.codebook):
                raise SystemExit(f"Error: the {part} model's codebooks differ from the encoder model's")
    if not torch.equal(pri.prior.t["codebooks"], enc.prior.t["codebooks"]):
        raise SystemExit("Error: the prior's integer codebooks differ from the encoder model's")

    state = enc.autoencoder.state_dict()
    state.update({k: v for k, v in dec.autoencoder.state_dict().items() if k.startswith(DECODER_SIDE)})
    cfg = ModelConfig.from_dict(enc.cfg.to_dict() | {"name": args.name})
    ae = enc.autoencoder
    ae.load_state_dict(state)
    ae.cfg = cfg
    report = {part: json.loads((d / "training_report.json").read_text()) for part, d in dirs.items()}
    report["assembled_from"] = {part: str(d) for part, d in dirs.items()}
    export_model(VQCodec.serialize(ae, pri.prior, enc.coarse_codes), cfg, report, args.out)
    size = (args.out / "model.safetensors").stat().st_size
    print(f"{args.out}: {args.name}, {size:,} bytes of weights")


if __name__ == "__main__":
    main()
