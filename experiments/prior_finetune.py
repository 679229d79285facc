"""Fine-tune a prior on the codec's own indices (issue 8, item 4); made vqf8-v11's prior from vqf8-v10's.

    python benchmarks/prior_finetune.py runs/beam/arm_beam --indices beam --float-steps 2250 --qat-steps 750 --lr 1e-3 --base runs/vqf8-v10

(vqf8-v11 was made with the base fixed to vqf8-v10, as --base runs/vqf8-v10 does with vqcodec 0.11: vqf8-v10's
model folder, from git (models/vqf8-v10 at the commit that shipped vqcodec 0.10); vqf8-v11 has the same
autoencoder, so `--base vqf8-v11` trains the same prior and only the reference column changes.)

Starts from the checkpoint --init (default runs/prior_long/prior.ckpt: the final checkpoint of vqf8-v10's prior
run, made by the command in vqf8-v10's model card, the float weights and Adam's moments at its step 6,000),
at step 0 of a new schedule
(`vqcodec.train.train_prior`: cosine learning rate, float steps, then quantisation-aware steps), on
  - `beam`: runs/beam/indices.pt (benchmarks/prior_beam_indices.py: the beam-search indices the codec writes), or
  - `greedy`: --greedy-indices (default runs/prior_long/indices.pt, the greedy indices vqf8-v10's prior was trained on).
  - `own`: runs/beam/own.pt and indices.pt together, (3200, 10, 32, 32, 10): each crop as every quality codes
    it, the beam over its own 1-10 stages (`prior_beam_indices.py --own`), for a prior that also sees the
    number of stages the file codes (ModelConfig.prior_stage_count; its count biases start at zero, Adam afresh,
    unless --init is a stage-count prior already: then it continues with its biases and Adam's moments);
    reported per stage count too.
All hold out their first 160 crops. Reports the exported integer prior's bits per index on both held-out sets,
with the base model's prior's for reference (keys ending `_v10`), and exports the base's autoencoder and coarse
codes with the new prior to ARM_DIR/export. Reruns resume from ARM_DIR's checkpoint.
"""
import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arm", type=Path, help="folder for the checkpoint, the report and the export")
    ap.add_argument("--indices", choices=["beam", "greedy", "own"], default="beam")
    ap.add_argument("--float-steps", type=int, default=2250)
    ap.add_argument("--qat-steps", type=int, default=750)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--base", default="vqf8-v11", help="model (name or folder) whose autoencoder made the indices")
    ap.add_argument("--beam-dir", type=Path, default=Path("runs/beam"),
                    help="where prior_beam_indices.py wrote indices.pt and own.pt (its --dir)")
    ap.add_argument("--greedy-indices", type=Path, default=Path("runs/prior_long/indices.pt"),
                    help="the greedy indices (a `vqcodec train` run's indices.pt)")
    ap.add_argument("--init", type=Path, default=Path("runs/prior_long/prior.ckpt"), help="prior checkpoint to start from")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (vqf8-v11's run: 1, the other core busy)")
    args = ap.parse_args()

    import dataclasses

    from vqcodec.codec import VQCodec, load_codec
    from vqcodec.prior import PriorNet
    from vqcodec.train import integer_bits_per_index, load_checkpoint, prior_fields, save_checkpoint, train_prior
    from vqcodec.training_cli import export_model

    torch.set_num_threads(args.threads)
    args.arm.mkdir(parents=True, exist_ok=True)
    base = load_codec(args.base)
    ae = base.autoencoder.eval()
    greedy = torch.load(args.greedy_indices, weights_only=True)["indices"]    # (3200, 32, 32, 10)
    beam = torch.load(args.beam_dir / "indices.pt", weights_only=True)                       # (3200, 32, 32, 10)
    cfg = base.cfg
    if args.indices == "own":
        own = torch.load(args.beam_dir / "own.pt", weights_only=True)                      # (3200, 9, 32, 32, 10) int16
        indices = torch.cat([own, beam.to(torch.int16)[:, None]], 1)                # (3200, 10, 32, 32, 10)
        del own
        cfg = dataclasses.replace(cfg, prior_stage_count=True)
        ae.cfg = cfg                                   # train_prior builds the prior from the model's config
    else:
        indices = {"greedy": greedy, "beam": beam}[args.indices]
    src = load_checkpoint(args.init, "cpu")
    if load_checkpoint(args.arm / "prior.ckpt", "cpu") is None:  # warm start: final weights and moments, step 0
        warm = {**src, "step": 0, "report": json.dumps({"warm_start": f"{args.init} step {src['step']}"})}
        net = PriorNet(cfg)
        missing = net.load_state_dict(src["prior"], strict=False).missing_keys
        if cfg.prior_stage_count and missing:  # new count biases at zero (the same tables at first), Adam afresh
            if sorted(missing) != ["count_bias1", "count_bias3"]:
                raise SystemExit(f"Error: {args.init} is not a prior of this shape (missing {missing})")
            warm.update(prior=net.state_dict(), prior_fields=list(prior_fields(cfg)),
                        optimizer=torch.optim.Adam(net.parameters(), lr=args.lr).state_dict())
        save_checkpoint(args.arm / "prior.ckpt", warm)
    t0 = time.time()
    prior, int_prior, report = train_prior(ae, indices, args.arm, float_steps=args.float_steps,
                                           qat_steps=args.qat_steps, lr=args.lr,
                                           autoencoder_step=src["autoencoder_step"])
    report["wall_s"] = round(time.time() - t0)
    held = len(greedy) // 20
    for name, idx in (("greedy", greedy), ("beam", beam)):
        report[f"heldout_{name}_integer"] = integer_bits_per_index(int_prior, idx[:held])
        report[f"heldout_{name}_integer_v10"] = integer_bits_per_index(base.prior, idx[:held])
    if args.indices == "own":   # per stage count: each quality's own beam indices, this prior against the base's
        for count in range(1, cfg.num_stages + 1):
            grids = indices[:held, count - 1, ..., :count].long()
            report[f"heldout_own{count}_integer"] = integer_bits_per_index(int_prior, grids)
            report[f"heldout_own{count}_integer_base"] = integer_bits_per_index(base.prior, grids)
    report.update(kind=args.indices, float_steps=args.float_steps, qat_steps=args.qat_steps, lr=args.lr)
    print(json.dumps(report, indent=1))
    export_model(VQCodec.serialize(ae, int_prior, base.coarse_codes), cfg, report, args.arm / "export")


if __name__ == "__main__":
    main()
